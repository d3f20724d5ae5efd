from kokpit.api.conditions import READY, get, is_true, set_condition


def test_transition_time_moves_only_when_status_flips() -> None:
    cs = set_condition([], "Upgrading", True, "StepStarted", "etcd", generation=1, at="t1")
    cs = set_condition(
        cs, "Upgrading", True, "StepStarted", "kube-apiserver", generation=2, at="t2"
    )
    c = get(cs, "Upgrading")
    assert c is not None
    assert c["lastTransitionTime"] == "t1", "same status: the transition time stays"
    assert (c["message"], c["observedGeneration"]) == ("kube-apiserver", 2)
    cs = set_condition(cs, "Upgrading", False, "Done", at="t3")
    assert get(cs, "Upgrading")["lastTransitionTime"] == "t3"  # type: ignore[index]


def test_ready_comes_first_then_by_type() -> None:
    cs = set_condition([], "RolledBack", False, "NoRollback")
    cs = set_condition(cs, READY, True, "AllHealthy")
    cs = set_condition(cs, "ControlPlaneAvailable", True, "Healthy")
    assert [c["type"] for c in cs] == [READY, "ControlPlaneAvailable", "RolledBack"]
    assert is_true(cs, READY)
    assert not is_true(cs, "RolledBack")
    assert not is_true(cs, "Missing")


def test_the_input_list_is_not_modified() -> None:
    original = set_condition([], READY, False, "Starting")
    set_condition(original, READY, True, "Started")
    assert original[0]["status"] == "False"


def test_unknown_status() -> None:
    cs = set_condition([], READY, "Unknown", "Probing")
    assert get(cs, READY)["status"] == "Unknown"  # type: ignore[index]
