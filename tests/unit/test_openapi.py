"""The REST API's contract: its OpenAPI document is the committed tests/unit/openapi.json.

Paths, methods, status codes, schemas and operation ids change only on purpose: a
deliberate change regenerates the file (``python -m tests.unit.test_openapi``) and the
diff shows it in review; any other difference fails here."""
from __future__ import annotations

import json
import sys
import tempfile
from pathlib import Path

from controller.rest.app import create_app
from controller.core import Core
from controller.store import Store
from cluster.hostsfile import parse

SNAPSHOT = Path(__file__).with_name("openapi.json")
HOSTS = """
controller: {openflow: ["tcp:127.0.0.1:6653"]}
hosts:
  - {name: h1, underlay_ip: 192.168.50.10}
"""


def document(tmp: Path) -> str:
    """The app's OpenAPI document as sorted, indented JSON (stable to diff)."""
    core = Core(Store(tmp / "weft.db"), parse(HOSTS))
    return json.dumps(create_app(core, "token").openapi(), indent=1, sort_keys=True) + "\n"


def test_the_openapi_document_is_the_committed_one(tmp_path):
    assert document(tmp_path) == SNAPSHOT.read_text(), \
        "the REST API's OpenAPI document changed; if on purpose: python -m tests.unit.test_openapi"


if __name__ == "__main__":
    with tempfile.TemporaryDirectory() as tmp:
        SNAPSHOT.write_text(document(Path(tmp)))
    print(f"wrote {SNAPSHOT}", file=sys.stderr)
