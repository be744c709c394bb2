"""Keywords and module attributes of the public API that were renamed or moved: the old
name still works, with a :class:`DeprecationWarning` that names the new one."""
import functools
import importlib
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


def moved(module, names):
    """A module's ``__getattr__`` for the names that moved to other modules: ``names`` maps
    each to the module that holds it now, and the old place still gives it, with a
    :class:`DeprecationWarning` that names the new one.

    Examples
    --------
    >>> import warnings
    >>> from tallskinny_np import certify
    >>> with warnings.catch_warnings(record=True) as caught:
    ...     warnings.simplefilter("always")
    ...     certify.gmres.__module__, str(caught[0].message)
    ('tallskinny_np.krylov', 'tallskinny_np.certify.gmres moved to tallskinny_np.krylov.gmres')
    """
    def __getattr__(name):
        if name not in names:
            raise AttributeError(f"module {module!r} has no attribute {name!r}")
        warnings.warn(f"{module}.{name} moved to {names[name]}.{name}", DeprecationWarning,
                      stacklevel=2)
        return getattr(importlib.import_module(names[name]), name)
    return __getattr__
