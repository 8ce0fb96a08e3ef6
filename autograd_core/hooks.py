"""A tensor's hooks (Tensor.register_hook, retain_grad) and the handle that removes one."""


class Hooks(list):
    """A tensor's hooks (register_hook) and whether retain_grad() asked for its gradient:
    one slot of the tensor, None while it has neither (the sweep asks one question per
    node)."""
    __slots__ = ("retain",)

    def __init__(self):
        super().__init__()
        self.retain = False


class HookHandle:
    __slots__ = ("_hooks", "_fn")

    def __init__(self, hooks, fn):
        self._hooks, self._fn = hooks, fn

    def remove(self):
        if self._fn in self._hooks:
            self._hooks.remove(self._fn)
