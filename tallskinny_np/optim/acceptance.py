"""How the second-order optimizers judge a trial step ``s`` at ``theta``: the decrease
``m(0) - m(s)`` that the quadratic model ``m(s) = f + g^T s + 1/2 s^T H s`` predicts, the
reduction ratio ``rho = (f(theta) - f(theta + s)) / (m(0) - m(s))`` on the gradient batch,
its thresholds (Moré 1978), and the count of failed trials."""
import math

ACCEPT = 1e-4            # a step is accepted when rho > ACCEPT (Moré 1978)
ARMIJO = 1e-4            # sufficient decrease of a backtracked step (Nocedal and Wright 3.4)
SHRINK_BELOW = 0.25      # rho < 1/4: the model was poor, damp more / shrink the radius
EXPAND_ABOVE = 0.75      # rho > 3/4: the model was good, damp less / grow the radius


def model_decrease(curv, grad, s, sHs=None):
    """``m(0) - m(s) = -(g^T s + 1/2 s^T H s)``, the decrease the quadratic model
    predicts for the step s; ``sHs``, where the step's solve has it, saves the product."""
    if sHs is None:
        sHs = float(s @ curv.hvp(s))
    return -(float(grad @ s) + 0.5 * sHs)


def reduction_ratio(loss, trial_loss, predicted):
    """``rho = (f(theta) - f(theta + s)) / (m(0) - m(s))``; -inf when the trial loss is
    not finite or the model predicts no decrease (then the step is worthless)."""
    if not math.isfinite(trial_loss) or not predicted > 0:
        return -math.inf
    return (loss - trial_loss) / predicted


def check_failures(state, failed, limit, what):
    """Count consecutive failed trials (non-finite loss or a singular solve) and give up
    with a message after ``limit`` of them."""
    state["failures"] = state.get("failures", 0) + 1 if failed else 0
    if state["failures"] >= limit:
        raise FloatingPointError(
            f"{state['failures']} consecutive trial steps gave a non-finite loss or a "
            f"singular system ({what}); the run has diverged or the data are broken")
