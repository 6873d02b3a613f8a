"""The priorities file: class weights from TOML; a bad file is one error naming its line."""

import pytest

from marsvision.triage.priorities import PrioritiesError, load_priorities

CLASSES = ["drill holes", "wheel", "ground"]


def write(tmp_path, text):
    path = tmp_path / "priorities.toml"
    path.write_text(text)
    return path


def test_weights_for_named_classes_others_stay_one(tmp_path):
    path = write(tmp_path, '# science team, sol 1200\n[weights]\n"drill holes" = 3\nwheel = 0.25\n')
    assert load_priorities(path, CLASSES) == {"drill holes": 3.0, "wheel": 0.25, "ground": 1.0}


@pytest.mark.parametrize(
    "text, line, words",
    [
        ('[weights]\n"drill holes" = 3\nwheel = = 0.25\n', 3, "not valid TOML"),
        ('[weights]\n"drill holes" = 3\n\n"dril holes" = 2\n', 4, "unknown class 'dril holes'"),
        ('[weights]\nwheel = "low"\n', 2, "must be a number"),
        ("[weights]\nground = -1\n", 2, "must be a number"),
        ("[weights]\nground = 1\n[extra]\nx = 1\n", 3, "unknown key 'extra'"),
    ],
)
def test_a_bad_file_names_its_line(tmp_path, text, line, words):
    path = write(tmp_path, text)
    with pytest.raises(PrioritiesError) as e:
        load_priorities(path, CLASSES)
    message = str(e.value)
    assert f"{path}: line {line}:" in message and words in message
    assert "\n" not in message


def test_a_missing_file_is_one_error(tmp_path):
    with pytest.raises(PrioritiesError, match="cannot read"):
        load_priorities(tmp_path / "nope.toml", CLASSES)
