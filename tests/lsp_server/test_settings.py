"""Settings: one typed model, parsed with defaults; invalid values are reported and replaced."""

import os

from lsp_server.settings import Settings, describe, parse_settings


def test_defaults_when_nothing_is_sent():
    settings, problems = parse_settings(None)
    assert settings == Settings() and problems == []


def test_nested_camel_case_values_are_parsed_and_typed():
    settings, problems = parse_settings({"egcfg": {
        "model": "/models/tiny", "device": "CPU", "quantization": "none", "preset": "paper", "gammas": [0, 1, 3],
        "testSeconds": 2, "memoryMb": 512, "testPatterns": "checks/*.py", "trigger": "manual",
        "valueDiagnostics": False, "debounceMs": 50}})
    assert problems == []
    assert settings.device == "cpu" and settings.gammas == (0.0, 1.0, 3.0) and settings.test_seconds == 2.0
    assert settings.test_patterns == ("checks/*.py",) and settings.trigger == "manual"
    assert settings.value_diagnostics == "off" and settings.debounce_ms == 50 and settings.memory_mb == 512


def test_snake_case_and_flat_keys_work_too():
    settings, problems = parse_settings({"test_seconds": 3, "debounce_ms": 0})
    assert problems == [] and settings.test_seconds == 3.0 and settings.debounce_ms == 0


def test_each_invalid_value_is_reported_and_the_default_used():
    settings, problems = parse_settings({"egcfg": {
        "device": "tpu", "gammas": [1, "x"], "testSeconds": -1, "memoryMb": 10.5, "trigger": 3,
        "valueDiagnostics": "yes", "debounceMs": True, "model": "", "colour": "red"}})
    assert settings == Settings()
    assert len(problems) == 9
    joined = "\n".join(problems)
    for key in ("'device'", "'gammas'", "'testSeconds'", "'memoryMb'", "'trigger'", "'valueDiagnostics'",
                "'debounceMs'", "'model'", "'colour'"):
        assert key in joined
    assert "must be one of auto, cpu, cuda" in joined


def test_a_change_applies_over_the_current_settings():
    base, _ = parse_settings({"trigger": "manual", "debounceMs": 10})
    settings, problems = parse_settings({"debounceMs": 20}, base=base)
    assert problems == [] and settings.trigger == "manual" and settings.debounce_ms == 20
    bad, problems = parse_settings(["not", "an", "object"], base=base)
    assert bad == base and "must be an object" in problems[0]


def test_keys_that_need_a_reload_and_the_camel_case_description():
    a, b = Settings(), Settings(model="other")
    assert a.engine_key() != b.engine_key() and a.sandbox_key() == b.sandbox_key()
    assert describe(Settings())["testSeconds"] == 5.0 and describe(Settings())["testPatterns"] == []


def test_the_nf4_kernel_setting_reloads_the_model():
    settings, problems = parse_settings({"egcfg": {"nf4Kernel": "EGCFG"}})
    assert problems == [] and settings.nf4_kernel == "egcfg"
    assert settings.engine_key() != Settings().engine_key() and Settings().nf4_kernel == "bitsandbytes"
    settings, problems = parse_settings({"nf4_kernel": "cublas"})
    assert settings.nf4_kernel == "bitsandbytes" and "must be one of bitsandbytes, egcfg" in problems[0]


def test_read_folders_are_existing_absolute_folders_never_the_system_or_home(tmp_path):
    from lsp_server.settings import parse_settings

    settings, problems = parse_settings({"readFolders": [str(tmp_path)]})
    assert settings.read_folders == (str(tmp_path),) and not problems
    assert settings.sandbox_key() != parse_settings({})[0].sandbox_key()   # a new executor shows it
    for bad in (["relative/lib"], [str(tmp_path / "missing")], ["/"], ["~"], [os.path.dirname(os.path.expanduser("~"))], "", [3]):
        settings, problems = parse_settings({"readFolders": bad})
        assert settings.read_folders == () and len(problems) == 1 and "readFolders" in problems[0], (bad, problems)
