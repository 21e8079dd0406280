"""Tables and ratings: what the page's form and user picker show, and their JSON requests checked.

A tabular model's description (``prep``, ``target``) names its input columns: categorical ones
with their categories, continuous ones with their training median; a collab model's
(``catalog``, ``config``) lists its users and items. Both are read without torch, so
``GET /model`` answers while the weights load.

``POST /predict`` takes ``{"rows": [{column: value, ...}, ...]}`` for a table (every column of
the model in every row; ``null`` for a missing value; unknown categories are fine: the model
has a code for them) and ``{"user": id, "k": 10}`` for ratings. A user the model was not
trained on is refused (422) rather than answered from the item biases alone, so a typo is not
mistaken for a cold-start user; ``learn.recommend`` in Python gives the bias-only answer.

Example:
    >>> prep = {"columns": ["age", "sex"], "dates": [],
    ...         "cats": [{"name": "sex", "source": "sex", "kind": "text",
    ...                   "classes": ["Female", "Male"]}],
    ...         "conts": [{"name": "age", "source": "age", "median": 37.0}]}
    >>> columns = describe_columns(prep)
    >>> [(c["name"], c["kind"]) for c in columns]
    [('age', 'continuous'), ('sex', 'categorical')]
    >>> check_rows({"rows": [{"age": "41", "sex": "Male"}]}, columns, max_rows=8)
    [{'age': 41.0, 'sex': 'Male'}]
    >>> check_user({"user": 196, "k": 5}, max_k=100)
    (196, 5)
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

from threeline.serve.errors import ApiError

MAX_LISTED = 1000  # users, items and categories per column listed by GET /model
DEFAULT_K = 10  # recommendations when the request names no k
MAX_ID_CHARS = 200


@dataclass(frozen=True)
class Refused:
    """The model thread's answer for one item it cannot answer (raised as an ApiError)."""

    status: int
    message: str


# ------------------------------------------------------------------ descriptions (no torch)

def application_info(application: str, description: dict) -> dict[str, Any] | None:
    """The keys ``read_info`` adds for a tabular or collab model (None for other models)."""
    if application == "threeline.tabular":
        target = description.get("target") or {}
        classes = [label(c) for c in target.get("classes") or []]
        return {"classes": classes, "columns": describe_columns(description.get("prep") or {}),
                "target": {"name": target.get("name"), "task": target.get("task"),
                           "classes": classes}}
    if application == "threeline.collab":
        return {"classes": [], **describe_catalog(description.get("catalog") or {},
                                                  description.get("config") or {})}
    return None


def describe_columns(prep: dict) -> list[dict[str, Any]]:
    """The input columns in the training table's order: name, kind and, for a categorical
    column, its categories; for a continuous one its training median (``typical``)."""
    cats = {c["source"]: c for c in prep.get("cats", [])
            if c.get("kind") != "flag" and not c.get("part")}
    conts = {c["source"]: c for c in prep.get("conts", []) if not c.get("part")}
    out = []
    for name in prep.get("columns", []):
        if name in prep.get("dates", []):
            out.append({"name": name, "kind": "date", "typical": None})
        elif name in cats:
            classes = [plain(v) for v in cats[name].get("classes", [])]
            out.append({"name": name, "kind": "categorical", "categories": classes[:MAX_LISTED],
                        "n_categories": len(classes), "typical": None})
        elif name in conts:
            out.append({"name": name, "kind": "continuous",
                        "typical": plain(conts[name].get("median"))})
    return out


def describe_catalog(catalog: dict, config: dict) -> dict[str, Any]:
    """Users and items of a collab model: counts, the first ``MAX_LISTED`` user ids, and the
    first ``MAX_LISTED`` items with titles when the training data had titles."""
    users, items = catalog.get("user_ids", []), catalog.get("item_ids", [])
    titles = catalog.get("titles", [])
    has_titles = any(t and t != str(i) for i, t in zip(items, titles, strict=False))
    listed = [{"item": i, "title": t} for i, t in zip(items, titles, strict=False)]
    return {"n_users": len(users), "n_items": len(items), "users": users[:MAX_LISTED],
            "users_listed": min(len(users), MAX_LISTED), "has_titles": has_titles,
            "items": listed[:MAX_LISTED] if has_titles else [],
            "rating_range": config.get("y_range"), "collab_kind": config.get("kind"),
            "n_factors": config.get("n_factors")}


def collab_description(description: dict) -> dict:
    """The description without the catalog's full id and title lists (GET /model is bounded)."""
    catalog = {k: v for k, v in (description.get("catalog") or {}).items()
               if k not in ("user_ids", "item_ids", "titles")}
    return {**description, "catalog": catalog}


def label(c: Any) -> str:
    """A class as ``learn.predict`` names its ``p_<class>`` column: 1.0 -> "1".

    Example:
        >>> label(1.0), label(">50K"), label(2.5)
        ('1', '>50K', '2.5')
    """
    return str(int(c)) if isinstance(c, float) and c.is_integer() else str(c)


def plain(v: Any) -> Any:
    """A JSON number as a whole number when it is one (categories saved as floats)."""
    return int(v) if isinstance(v, float) and v.is_integer() else v


# ------------------------------------------------------------------------------ requests

def check_rows(payload: object, columns: list[dict], max_rows: int) -> list[dict[str, Any]]:
    """The ``rows`` of a JSON request, checked and reduced to the model's columns.

    Continuous values must be numbers (or numeric text) or null; categorical values any text,
    number, boolean or null; dates text or null.

    Raises:
        ApiError: 400 for the wrong shape, 413 for too many rows, 422 for missing columns or
            values of the wrong type.
    """
    rows = payload.get("rows") if isinstance(payload, dict) else None
    if isinstance(payload, dict) and rows is None and isinstance(payload.get("row"), dict):
        rows = [payload["row"]]
    if not isinstance(rows, list) or not rows or not all(isinstance(r, dict) for r in rows):
        raise ApiError(400, 'Send JSON like {"rows": [{"column": value, ...}]}: a non-empty '
                            'list of objects, one per row.')
    if len(rows) > max_rows:
        raise ApiError(413, f"{len(rows)} rows in one request; at most {max_rows} (send "
                            f"several requests, or raise --max-rows).")
    _check_missing(rows, [c["name"] for c in columns])
    return [{c["name"]: _value(row[c["name"]], c, i) for c in columns}
            for i, row in enumerate(rows)]


def _check_missing(rows: list[dict], names: list[str]) -> None:
    for i, row in enumerate(rows):
        missing = [n for n in names if n not in row]
        if missing:
            raise ApiError(422, f"rows[{i}] lacks the columns {missing}; every row needs all of "
                                f"{names} (null for a missing value).")


def _value(value: Any, column: dict, row: int) -> Any:
    where = f"rows[{row}][{column['name']!r}]"
    if value is None:
        return None
    if isinstance(value, float) and not math.isfinite(value):
        raise ApiError(422, f"{where} is {value}; expected a finite number or null.")
    if column["kind"] == "continuous":
        return _number(value, where)
    if column["kind"] == "date":
        if not isinstance(value, str):
            raise ApiError(422, f"{where} is a {type(value).__name__}; expected a date as text "
                                f"(2015-06-01) or null.")
        return value.strip() or None
    if not isinstance(value, (str, int, float, bool)):
        raise ApiError(422, f"{where} is a {type(value).__name__}; expected a category (text or "
                            f"a number) or null.")
    return value


def _number(value: Any, where: str) -> float | None:
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return float(value)
    if isinstance(value, str):
        if not value.strip():
            return None
        try:
            number = float(value)
        except ValueError:
            number = math.nan
        if math.isfinite(number):
            return number
    raise ApiError(422, f"{where} is {value!r}; expected a number or null.")


def check_user(payload: object, max_k: int) -> tuple[str | int, int]:
    """``(user, k)`` of a JSON request ``{"user": id, "k": 10}`` (k defaults to 10).

    Raises:
        ApiError: 400 for the wrong shape or a k that is not a whole number of at least 1,
            413 for a k above ``max_k``.
    """
    user = payload.get("user") if isinstance(payload, dict) else None
    if isinstance(user, str):
        user = user.strip()
    if (isinstance(user, bool) or not isinstance(user, (str, int)) or user == ""
            or len(str(user)) > MAX_ID_CHARS):
        raise ApiError(400, 'Send JSON like {"user": 196, "k": 10}: a user id (text or a whole '
                            'number) and how many recommendations.')
    k = payload.get("k", DEFAULT_K)
    if isinstance(k, bool) or not isinstance(k, int) or k < 1:
        raise ApiError(400, f"k must be a whole number of at least 1, got {k!r}.")
    if k > max_k:
        raise ApiError(413, f"k is {k}; at most {max_k} recommendations per request (raise "
                            f"--max-k).")
    return user, k


# ---------------------------------------------------------------- answers (model thread)

def unknown_user(user: str | int, n_users: int) -> Refused:
    return Refused(422, f"user {user!r} is not among the model's {n_users:,} users (it was not "
                        f"in the training ratings); pick one of GET /model's users.")


def recommendation_list(frame: Any) -> list[dict[str, Any]]:
    """``learn.recommend``'s DataFrame (item, title, predicted) as JSON-ready rows."""
    return [{"item": _id(i), "title": str(t), "predicted": round(float(p), 5)}
            for i, t, p in zip(frame["item"], frame["title"], frame["predicted"], strict=True)]


def _id(value: Any) -> Any:
    return value.item() if hasattr(value, "item") else value
