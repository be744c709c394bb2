"""Keywords of the public API that were renamed: the old name still works, with a
:class:`DeprecationWarning` that names the new one."""
import functools
import warnings


def renamed(**old_to_new):
    """Decorate a function so that each keyword ``old`` of ``old_to_new`` is passed on as
    its new name, with a :class:`DeprecationWarning`; both at once is a TypeError.

    Examples
    --------
    >>> import warnings
    >>> from tallskinny_np.deprecation import renamed
    >>> @renamed(shift="damping")
    ... def count(damping=0.0):
    ...     return damping
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     count(shift=2.0), str(caught[0].message)
    (2.0, "count(): the keyword 'shift' is deprecated; use 'damping'")
    """
    def decorate(function):
        @functools.wraps(function)
        def wrapper(*args, **kwargs):
            for old, new in old_to_new.items():
                if old in kwargs:
                    if new in kwargs:
                        raise TypeError(f"{function.__qualname__}() got both {old!r} and "
                                        f"its new name {new!r}")
                    warnings.warn(f"{function.__qualname__}(): the keyword {old!r} is "
                                  f"deprecated; use {new!r}", DeprecationWarning,
                                  stacklevel=2)
                    kwargs[new] = kwargs.pop(old)
            return function(*args, **kwargs)
        return wrapper
    return decorate
