"""The start-document metadata every plan builds the same way (as `bluesky.plans.count` does)."""

from __future__ import annotations

from typing import Any


def plan_metadata(plan_name: str, plan_args: dict[str, Any], md: dict | None,
                  **extra: Any) -> dict[str, Any]:
    """`plan_name`, `plan_args` (devices by name), extra keys, then the caller's `md` on top."""
    args = {k: getattr(v, "name", v) if hasattr(v, "read") else v for k, v in plan_args.items()}
    _md = {"plan_name": plan_name, "plan_args": args, **extra}
    _md.update(md or {})
    return _md
