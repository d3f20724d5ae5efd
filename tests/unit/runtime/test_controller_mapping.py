import inspect

import kokpit.runtime
from kokpit.runtime.controller import Request, for_object, for_owner, generation_changed


def test_for_owner_maps_only_the_controlling_owner_of_that_kind() -> None:
    def child(*refs: dict[str, object]) -> dict[str, object]:
        return {"metadata": {"name": "c", "namespace": "ns", "ownerReferences": list(refs)}}

    mapper = for_owner("Cluster", "kokpit.io")
    owner = {"apiVersion": "kokpit.io/v1alpha1", "kind": "Cluster", "name": "a", "controller": True}
    assert mapper(child(owner)) == [Request("ns", "a")]
    assert mapper(child({**owner, "controller": False})) == []
    assert mapper(child({**owner, "kind": "Machine"})) == []
    assert mapper(child({**owner, "apiVersion": "other.io/v1"})) == []
    assert mapper(child()) == []


def test_for_object_and_keys() -> None:
    assert for_object({"metadata": {"name": "n"}}) == [Request("", "n")]
    assert Request("ns", "x").key == "ns/x"
    assert Request("", "node-1").key == "node-1"


def test_generation_changed_ignores_status_only_updates() -> None:
    old = {"metadata": {"generation": 1}}
    assert generation_changed(None, old)
    assert not generation_changed(old, {"metadata": {"generation": 1}})
    assert generation_changed(old, {"metadata": {"generation": 2}})


def test_public_surface_is_curated() -> None:
    """Everything importable from kokpit.runtime (but its submodules) is listed in __all__."""
    public = {
        name
        for name, value in vars(kokpit.runtime).items()
        if not name.startswith("_") and not inspect.ismodule(value)
    }
    assert set(kokpit.runtime.__all__) == public
