"""The form's Devices field (create()'s ``num_devices``): what the service has, read from its real
``/api/health``; checked by create()'s own check (inputs/validate.check_num_devices) through the one
function of the form's state; in the preview only when set and valid; passed by Start to create() and
by a sweep to every cell.
"""

from __future__ import annotations

import ast
import dataclasses

import pytest

from tunedeck.inputs.validate import RunRequest, request_problems
from tunedeck.ui._validation import DeviceInfo, Fix, FormState, Report, preview_code, validate

BASE = {"model": "tiny-chat", "train_data_path": "/d/train.jsonl", "register_to": "main.demo"}
TWO_CORES = "2 CPU cores (0-1; CPU affinity)"


@pytest.fixture
def service(home):
    """A real service (core, store, REST app) that trains on 2 CPU cores, in-process."""
    from fastapi.testclient import TestClient

    from tunedeck.service.app import create_app
    from tunedeck.service.core import RunService
    from tunedeck.service.devices import DevicePool
    from tunedeck.service.store import Store

    home.mkdir(parents=True)
    svc = RunService(Store(home / "tunedeck.db"), devices=DevicePool("cpu", ("0", "1"), "CPU affinity"))
    client = TestClient(create_app(svc, "t", home))
    client.headers["Authorization"] = "Bearer t"
    yield client, svc
    svc.store.close()


def health(client) -> dict:
    answer = client.get("/api/health")
    assert answer.status_code == 200
    return answer.json()


@pytest.fixture
def devices(service) -> DeviceInfo:
    info = DeviceInfo.from_health(health(service[0]))
    assert info is not None
    return info


def created_problem(svc, num_devices):
    """create()'s problem with num_devices, as the service words it for its devices."""
    req = RunRequest(model="m", train_data_path="/d/t.jsonl", register_to="main.demo", num_devices=num_devices)
    [problem] = [p for p in request_problems(req, svc._devices()) if p.field == "num_devices"]
    return problem


def state(**fields) -> FormState:
    return FormState(**{**BASE, "model": "m"}, **fields)


def create_call(code: str) -> dict:
    call = ast.parse(code).body[-1].value
    assert ast.unparse(call.func) == "fm.create"
    return {kw.arg: ast.literal_eval(kw.value) for kw in call.keywords}


def errors(form) -> dict[str, str]:
    return {field: box.value for field, box in form._errors.items() if box.value}


# -- the service says what it has ------------------------------------------------------------------------
def test_health_says_how_many_devices_of_which_kind_and_the_default(service, monkeypatch):
    client, _ = service
    devices = health(client)["devices"]
    assert devices["described"] == TWO_CORES and devices["total"] == 2 and devices["kind"] == "cpu"
    assert devices["default_num_devices"] == 1
    assert DeviceInfo.from_health(health(client)) == DeviceInfo(2, "cpu", TWO_CORES, 1)
    monkeypatch.setenv("TUNEDECK_NUM_DEVICES", "2")
    assert health(client)["devices"]["default_num_devices"] == 2
    monkeypatch.setenv("TUNEDECK_NUM_DEVICES", "two")  # create() refuses it, naming the setting; health says None
    assert health(client)["devices"]["default_num_devices"] is None
    assert DeviceInfo.from_health({"status": "ok"}) is None  # an older service: no devices known


def test_the_fake_service_answers_health_as_the_real_one(service):
    from tests.ui.fakes import FakeClient

    real = health(service[0])["devices"]
    assert set(FakeClient.health_result["devices"]) == set(real)
    assert DeviceInfo.from_health(FakeClient.health_result) == DeviceInfo.from_health(health(service[0]))


# -- the validation-state function ----------------------------------------------------------------------------
def test_devices_are_checked_in_create_s_words(service, devices):
    _, svc = service
    too_many = state(num_devices="3", strict=True)
    reported = Report(too_many, "create", problems=(created_problem(svc, 3),))
    v = validate(too_many, {}, [reported], devices)
    [issue] = v.by_field()["num_devices"]  # the form's own check and the service's answer: one problem, same words
    assert issue.text() == f"Devices asks for 3 devices (one per process) and this service has {TWO_CORES}: at most 2"
    assert issue.fix == Fix("num_devices", "2", "Set Devices to 2")
    assert v.left_out["num_devices"] == "invalid" and "num_devices" not in v.params

    for typed, problem in (("0", created_problem(svc, 0)), ("-1", created_problem(svc, -1))):
        v = validate(state(num_devices=typed), {}, (), devices)
        assert [i.text() for i in v.by_field()["num_devices"]] == [f"Devices {problem.message}"]
        assert "at least 1" in problem.message
    v = validate(state(num_devices="two"), {}, (), devices)
    assert [i.text() for i in v.by_field()["num_devices"]] == ["Devices must be a whole number, found 'two'"]
    assert [i.text() for i in validate(state(num_devices="1.5"), {}, (), devices).by_field()["num_devices"]] == [
        "Devices must be a whole number, found '1.5'"]

    assert validate(state(num_devices=" 2 "), {}, (), devices).params["num_devices"] == 2
    assert validate(state(num_devices="1"), {}, (), devices).params["num_devices"] == 1  # set: kept, whatever the default
    assert "num_devices" not in validate(state(), {}, (), devices).params  # blank: the service's default
    # without the service's devices (it did not say): no upper bound here, create() checks it
    assert validate(state(num_devices="64"), {}, ()).params["num_devices"] == 64
    assert "num_devices" in validate(state(num_devices="0"), {}, ()).by_field()


@pytest.mark.parametrize("typed", ["3", "0", "-2", "two", "1.5", "2 gpus"])
def test_the_preview_never_holds_an_invalid_device_count(devices, typed):
    code = preview_code(validate(state(num_devices=typed), {}, (), devices))
    assert "    # num_devices: left out, Devices is invalid (see the field marked in red)" in code
    assert "num_devices=" not in code and typed not in code.split("run = fm.create(")[1]


def test_the_preview_has_num_devices_only_when_set(devices):
    assert "num_devices" not in preview_code(validate(state(), {}, (), devices))
    code = preview_code(validate(state(num_devices="2"), {}, (), devices))
    assert "    num_devices=2,\n" in code and create_call(code)["num_devices"] == 2
    assert code.rstrip().endswith("num_devices=2,\n)")  # create()'s order: the last parameter


def test_a_memory_problem_of_several_processes_offers_one(devices):
    typed = state(num_devices="2")
    problem = ("num_devices", "the run needs ~9.0 GiB: 2 processes on 8 GiB of memory. One process (num_devices=1) would fit.")
    from tunedeck.errors import Problem

    reported = Report(typed, "create", problems=(Problem(*problem),))
    [issue] = validate(typed, {}, [reported], devices).by_field()["num_devices"]
    assert issue.text().startswith("Devices: the run needs") and issue.text().endswith("One process (Devices 1) would fit.")
    assert issue.fix == Fix("num_devices", "1", "Set Devices to 1")
    # the answer was for 2 processes: gone once Devices changes, and once the model changes
    assert "num_devices" not in validate(dataclasses.replace(typed, num_devices="1"), {}, [reported], devices).by_field()
    assert "num_devices" not in validate(dataclasses.replace(typed, model="m2"), {}, [reported], devices).by_field()


# -- the form ------------------------------------------------------------------------------------------------
def test_the_form_says_what_devices_the_service_has(make_form, fake, service):
    fake.health_result = health(service[0])  # the real service's answer
    form = make_form(**BASE)
    assert form.devices_w.value == "" and form.devices_w.placeholder == "default 1"
    help_line = form.devices_help.value
    assert "blank = 1" in help_line and "one CPU core each" in help_line and f"this service has {TWO_CORES}" in help_line
    assert "TUNEDECK_SHARDING" in help_line
    rows = [row._dom_classes for row in form.advanced_w.children[0].children]
    assert ("td-field", "td-field-num_devices") in rows  # the row sits in Advanced
    assert "num_devices" not in form.params() and "num_devices" not in form.code()


def test_too_many_devices_show_by_the_field_with_a_fix_and_block_start(make_form, fake):
    form = make_form(**BASE)
    form.devices_w.value = "3"
    assert errors(form)["num_devices"].count("td-issue") == 1
    assert f"Devices asks for 3 devices (one per process) and this service has {TWO_CORES}: at most 2" in (
        errors(form)["num_devices"])
    assert form.advanced_w.selected_index == 0  # folded-away Advanced opens to show it
    assert "num_devices" not in form.params() and "# num_devices: left out" in form.code()
    assert form.submit() is None and fake.created == []
    [fix] = form._fix_boxes["num_devices"].children
    assert fix.description == "Set Devices to 2"
    fix.click()
    assert form.devices_w.value == "2" and errors(form) == {} and form.params()["num_devices"] == 2


def test_start_passes_num_devices_to_create(make_form, fake):
    form = make_form(**BASE, num_devices=2)  # form() takes it like create()
    assert form.devices_w.value == "2"
    assert form.params() == {**BASE, "num_devices": 2}
    run = form.submit()
    assert run is not None and fake.created[-1]["num_devices"] == 2
    form.devices_w.value = ""
    assert form.submit() is not None and "num_devices" not in fake.created[-1]  # blank: the service's default


def test_a_sweep_passes_num_devices_to_every_cell(make_form, fake):
    form = make_form(**BASE, num_devices=2)
    form.sweep_w.value = True
    form.unit_w.value = "ba"
    form.lr_w.value = "1e-4, 3e-4"
    form.duration_w.value = "2, 3"
    assert "    num_devices=2,\n" in form.code() and "tunedeck.sweep(" in form.code()
    form.submit()
    assert len(fake.created) == 4 and all(params["num_devices"] == 2 for params in fake.created)


def test_without_the_services_devices_create_checks_the_count(make_form, fake, monkeypatch):
    def down():
        raise ConnectionError("no health")

    monkeypatch.setattr(fake, "health", down)
    form = make_form(**BASE)
    assert form.devices_w.placeholder == "default"
    assert "blank = the service&#x27;s default (TUNEDECK_NUM_DEVICES, else 1)" in form.devices_help.value
    form.devices_w.value = "64"
    assert errors(form) == {} and form.params()["num_devices"] == 64
    form.devices_w.value = "0"
    assert "Devices must be at least 1" in errors(form)["num_devices"]
