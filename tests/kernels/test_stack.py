"""The GPU machine's stack (torch 2.11, triton 3.6): triton < 3.7's interpreter needs a shim under
numpy 2 (its tensors' __index__ calls int() on a shape-(1,) array, which numpy 2 refuses: every
grid-stride loop stopped there). The shim is installed for such a triton only, and works."""
import types

import numpy as np

import kernels._triton as kt


class _Scope:
    def __init__(self):
        self.attrs = {}

    def set_attr(self, obj, name, value):
        self.attrs[name] = value
        setattr(obj, name, value)


def test_shim_gives_interpreter_tensors_an_index_numpy_2_accepts(monkeypatch):
    fake = types.SimpleNamespace(_patch_lang_tensor=lambda tensor, scope: scope.set_attr(
        tensor, "__index__", lambda self: int(self.handle.data)))
    import triton
    import triton.runtime
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setattr(triton.runtime, "interpreter", fake, raising=False)
    monkeypatch.setitem(__import__("sys").modules, "triton.runtime.interpreter", fake)
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert kt._interpreter_shim_for_triton_36()

    class Tensor:
        pass
    scope = _Scope()
    fake._patch_lang_tensor(Tensor, scope)
    t = Tensor()
    t.handle = types.SimpleNamespace(data=np.array([7], dtype=np.int32))
    assert range(t, 10)[0] == 7  # what a grid-stride loop does with its bounds


def test_shim_is_not_installed_for_triton_37_or_later(monkeypatch):
    import triton
    monkeypatch.setattr(triton, "__version__", "3.8.0")
    monkeypatch.setenv("TRITON_INTERPRET", "1")
    assert not kt._interpreter_shim_for_triton_36()
    monkeypatch.setattr(triton, "__version__", "3.6.0")
    monkeypatch.setenv("TRITON_INTERPRET", "0")
    assert not kt._interpreter_shim_for_triton_36()
