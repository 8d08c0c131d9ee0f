"""The handlers of the original Flowweaver README's example: fetch_data, process_data, save_result.

``flowweaver serve`` registers them (unless a handler of the same name is loaded, or
``--no-example-handlers``) so that the original README's curl session works as written. They
do no I/O: fetch_data returns a fixed sample, process_data summarises it, save_result echoes.
"""

from __future__ import annotations

from typing import Any

SAMPLE = [3, 1, 4, 1, 5, 9, 2, 6]


def fetch_data(inputs: dict[str, Any]) -> dict[str, Any]:
    """Return a fixed sample of records, labelled with ``inputs.url`` when given."""
    return {"source": str(inputs.get("url", "example")), "records": list(SAMPLE)}


def process_data(inputs: dict[str, Any]) -> dict[str, Any]:
    """Summarise ``inputs.source`` (fetch_data's output): count and total of its records."""
    source = inputs.get("source")
    records = source.get("records", []) if isinstance(source, dict) else []
    numbers = [r for r in records if isinstance(r, int | float) and not isinstance(r, bool)]
    return {"count": len(records), "total": sum(numbers)}


def save_result(inputs: dict[str, Any]) -> dict[str, Any]:
    """Pretend to save ``inputs.processed`` and return what was saved."""
    return {"saved": True, "processed": inputs.get("processed")}


EXAMPLE_HANDLERS = {
    "fetch_data": fetch_data,
    "process_data": process_data,
    "save_result": save_result,
}

# The original README's workflow: task1 publishes {data}, task2 reads `$.data`, task3 reads
# task2's `$.result`.
EXAMPLE_WORKFLOW: dict[str, Any] = {
    "id": "example-workflow",
    "tasks": [
        {
            "id": "task1",
            "name": "Fetch Data",
            "handler": "fetch_data",
            "outputs": {"data": "$.result"},
        },
        {
            "id": "task2",
            "name": "Process Data",
            "handler": "process_data",
            "dependencies": ["task1"],
            "inputs": {"source": "$.data"},
        },
        {
            "id": "task3",
            "name": "Save Result",
            "handler": "save_result",
            "dependencies": ["task2"],
            "inputs": {"processed": "$.result"},
        },
    ],
}
