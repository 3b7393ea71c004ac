"""Run files: JSON written atomically, compact where it holds numbers, the same data read back."""

import json

from dflab.core.files import dumps, read_json, write_json


def test_json_keeps_number_lists_on_one_line_and_strings_as_they_are(tmp_path):
    obj = {"box": [1.0, 2.5, -3e-05, 4], "points": [[1.0, 2.0], [3.5, -4.0]],
           "text": "[1,  2]", "mixed": [1, "x"], "words": [["a", "b"]], "nan": [float("nan")],
           "nested": {"frames": [{"landmarks68": [[10.5, 20.25]] * 68}]}}
    path = write_json(tmp_path / "meta.json", obj)
    text = path.read_text()
    back = read_json(path)
    assert back["text"] == "[1,  2]" and back["points"] == obj["points"]
    assert back["nested"] == obj["nested"] and back["mixed"] == [1, "x"]
    assert '"box": [1.0, 2.5, -3e-05, 4]' in text and '"points": [[1.0, 2.0], [3.5, -4.0]]' in text
    # 68 points on one line, not 204
    assert len(text.splitlines()) < 40 and json.loads(dumps(obj))["words"] == [["a", "b"]]
    assert not list(tmp_path.glob("*.part"))
