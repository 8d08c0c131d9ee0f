"""Handlers of the failure-detail example (docs/concepts.md, "Failure detail").

flowweaver run examples/failure-detail.json --handlers examples/failure_detail.py
"""

from typing import Any

import flowweaver


@flowweaver.handler("load_prices")
def load_prices(inputs: dict[str, Any], context: flowweaver.TaskContext) -> dict[str, Any]:
    """Return the price rows of ``inputs["source"]`` (one of them has no price)."""
    context.log.info("loading", source=inputs["source"])
    rows = [{"id": 1, "price": "12.50"}, {"id": 2, "price": "n/a"}]
    context.log.info("loaded", rows=len(rows))
    return {"rows": rows}


@flowweaver.handler("total_price")
def total_price(inputs: dict[str, Any], context: flowweaver.TaskContext) -> dict[str, Any]:
    """Add the rows' prices up; a row without a price fails the attempt."""
    total = 0.0
    for row in inputs["rows"]:
        context.log.debug("adding", row=row["id"])
        try:
            total += float(row["price"])
        except ValueError as e:
            raise RuntimeError(f"row {row['id']} has no price") from e
    return {"total": total}
