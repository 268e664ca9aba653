import pytest

from tunedeck.inputs import params


@pytest.mark.parametrize("text,value,unit", [("10ep", 10, "ep"), ("1_000_000tok", 1_000_000, "tok"), ("100ba", 100, "ba"), (None, 1, "ep")])
def test_parse_duration(text, value, unit):
    d = params.parse_duration(text)
    assert (d.value, d.unit) == (value, unit)


@pytest.mark.parametrize("text", ["10", "ep", "1.5ep", "0ba", "10 epochs", "-1ep"])
def test_parse_duration_rejects_with_the_accepted_forms(text):
    with pytest.raises(ValueError, match="ep.*tok.*ba|greater than zero"):
        params.parse_duration(text)


def test_learning_rate_accepts_reference_strings_and_rejects_nonsense():
    assert params.parse_learning_rate("5e-7") == 5e-7
    assert params.parse_learning_rate(None) is None
    for bad in ("fast", 0, 2.0, -1e-5):
        with pytest.raises(ValueError):
            params.parse_learning_rate(bad)


def test_register_to_two_and_three_parts():
    assert params.registered_model_name("main.demo", "run-1") == "main.demo.run-1"
    assert params.registered_model_name("main.demo.my-model", "run-1") == "main.demo.my-model"
    for bad in ("main", "main..x", "main/demo", "", "a.b c"):
        with pytest.raises(ValueError, match="catalog"):
            params.registered_model_name(bad, "r")


def test_task_type_default_is_chat_completion():
    assert params.check_task_type(None) == "CHAT_COMPLETION"
    assert params.check_task_type("instruction_finetune") == "INSTRUCTION_FINETUNE"
    with pytest.raises(ValueError, match="CONTINUED_PRETRAIN"):
        params.check_task_type("SUMMARIZE")


def test_default_context_length_caps_at_8192():
    assert params.default_context_length(2048) == 2048
    assert params.default_context_length(32768) == 8192
