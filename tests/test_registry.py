import pytest

from dflab.core.registry import Registry, RegistryError, require


def test_register_list_create():
    reg = Registry("widget")

    @reg.register("alpha_x", help="first")
    def alpha(scale=1):
        return ("alpha", scale)

    @reg.register("beta_y")
    def beta():
        """second one"""
        return "beta"

    assert reg.list() == ["alpha_x", "beta_y"]
    assert reg.list("a*") == ["alpha_x"]
    assert reg.create("alpha_x", scale=3) == ("alpha", 3)
    assert reg.help("beta_y") == "second one"
    assert "alpha_x" in reg and "gamma" not in reg
    with pytest.raises(ValueError, match="twice"):
        reg.register("alpha_x")(alpha)


def test_unknown_name_suggests():
    reg = Registry("detector")
    reg.register("yunet")(lambda: None)
    reg.register("yolo")(lambda: None)
    with pytest.raises(RegistryError) as exc:
        reg.create("yunett")
    msg = str(exc.value)
    assert "unknown detector 'yunett'" in msg and "'yunet'" in msg and "yolo" in msg


def test_require_names_the_install():
    with pytest.raises(ImportError, match=r"pip install 'dflab\[extra1\]'"):
        require("surely_not_a_module_dflab", extra="extra1")
    assert require("json").dumps([1]) == "[1]"
