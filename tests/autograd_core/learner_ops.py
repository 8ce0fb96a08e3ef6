"""Ops as a learner writes them, for the tests that put rules in place on them."""
from autograd_core.function import Memory, Op


def cube_class(op_name):
    """An op class x -> x^3 whose rule is also text (so the sweep runs it as one generated
    step); `op_name` None makes an abstract family to derive from."""
    class Cube(Op):
        name = op_name
        inputs = ("x",)
        saves = ("x",)
        view = False
        rule = "d x^3 = 3 x^2 g"
        hazard = None
        memory = Memory()
        inline_backward = ("{g} * 3.0 * {x0} * {x0}",)

        @staticmethod
        def forward(out, x):
            return x * x * x

        @staticmethod
        def backward(g, out, xp):
            x = xp.val(out._inputs[0])
            return (g * 3.0 * x * x,)

    return Cube
