"""Assertions for tests, e.g. a teacher grading hand-written backward passes with pytest:

    def test_my_backward():
        nn.testing.assert_backward_matches(backward, model, xs, targets)
"""
from .check_backward import check_backward


def assert_backward_matches(student, model, xs, targets, step_weights=None):
    """Raise an AssertionError carrying `check_backward`'s table unless `student`'s gradients
    agree with the engine's; returns the report when they do."""
    report = check_backward(student, model, xs, targets, step_weights)
    if not report.ok:
        raise AssertionError("the hand-written backward differs from the engine's\n"
                             + report.table())
    return report
