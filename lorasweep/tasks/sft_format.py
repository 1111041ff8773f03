"""Rows of instruction or chat data as turns: the formats of ``sft`` (pure Python, no tokenizer).

``task.format`` is ``alpaca`` (``instruction``, optional ``input``, ``output``, optional
``system``), ``prompt-completion`` (``prompt``, ``completion``: strings, or lists of messages as
TRL writes them), ``messages`` (a list of ``{role, content}``; ShareGPT's ``{from, value}`` is
read too, under a ``messages`` or ``conversations`` column) or ``text`` (plain text, every token
learned); ``auto`` picks by the row's columns as TRL does, and a row that fits none or more than
one is an error naming its number. ``task.fields`` maps these canonical fields to the data's
columns (``prompt=question,completion=answer``), ``task.roles`` maps role names
(``human=user,gpt=assistant``: ShareGPT's are mapped by default).

:func:`to_example` gives ``{"turns": [{role, content, completion}], "format": ...}`` (or
``{"text": ...}``); ``completion`` marks the turns that are the row's answer (the completion of
prompt-completion and alpaca data, the last turn of messages).
"""

from __future__ import annotations

from typing import Any

from .base import TaskError

__all__ = ["FORMATS", "ROLES", "detect_format", "parse_map", "to_example"]

FORMATS = ("auto", "alpaca", "prompt-completion", "messages", "text")
ROLES = ("system", "user", "assistant")
#: ShareGPT's and common role names (as axolotl maps them by default); task.roles adds to them.
_DEFAULT_ROLES = {"human": "user", "gpt": "assistant", "model": "assistant", "bot": "assistant"}
#: The columns that say which format a row is in, as the canonical fields of each format.
_SIGNS = {"messages": (("messages",), ("conversations",)),
          "prompt-completion": (("prompt", "completion"),),
          "alpaca": (("instruction", "output"),),
          "text": (("text",),)}
_CANONICAL = {"alpaca": ("instruction", "input", "output", "system"),
              "prompt-completion": ("prompt", "completion"),
              "messages": ("messages", "system"), "text": ("text",)}


def parse_map(value: Any, option: str) -> dict[str, str]:
    """``a=b,c=d`` (or a mapping from a recipe) as a dict; anything else is one error line."""
    if value is None or value == "":
        return {}
    if isinstance(value, dict):
        return {str(k).strip(): str(v).strip() for k, v in value.items()}
    out = {}
    for part in str(value).split(","):
        key, eq, target = part.partition("=")
        if not eq or not key.strip() or not target.strip():
            raise TaskError(f"task.{option}={value!r} is not NAME=VALUE pairs (e.g. --set "
                            f"task.{option}={'prompt=question' if option == 'fields' else 'human=user'})")
        out[key.strip()] = target.strip()
    return out


def _column(fields: dict[str, str], name: str) -> str:
    return fields.get(name, name)


def detect_format(row: dict[str, Any], fields: dict[str, str], number: int, where: str) -> str:
    """The format of ``row`` (row ``number`` of ``where``) by its columns, as TRL's types are."""
    present = {k for k, v in row.items() if v is not None}
    fits = [fmt for fmt, signs in _SIGNS.items()
            if any(all(_column(fields, c) in present for c in sign) for sign in signs)]
    if len(fits) == 1:
        return fits[0]
    if not fits:
        raise TaskError(f"row {number} of {where} has none of messages / prompt+completion / "
                        f"instruction+output / text (columns: {', '.join(row)}); set task.format "
                        "and task.fields (e.g. --set task.fields=prompt=question,completion=answer)")
    raise TaskError(f"row {number} of {where} fits more than one format ({', '.join(fits)}); "
                    f"set task.format={fits[0]}")


def _text(value: Any, what: str, number: int) -> str:
    if not isinstance(value, str) or not value.strip():
        shown = "empty" if value is None or isinstance(value, str) else f"not text ({value!r})"
        raise TaskError(f"row {number}: {what} is {shown}; clean the data or map another column "
                        "with task.fields")
    return value


def _messages(value: Any, roles: dict[str, str], number: int, what: str) -> list[dict[str, str]]:
    if not isinstance(value, list) or not value:
        raise TaskError(f"row {number}: {what} is not a list of messages ({{role, content}} or "
                        "{from, value})")
    out = []
    for i, message in enumerate(value, 1):
        if not isinstance(message, dict):
            raise TaskError(f"row {number}: turn {i} of {what} is not a {{role, content}} object")
        role = message.get("role", message.get("from"))
        content = message.get("content", message.get("value"))
        mapped = roles.get(str(role), _DEFAULT_ROLES.get(str(role), str(role)))
        if mapped not in ROLES:
            raise TaskError(f"row {number}: role {role!r} (turn {i}) is not user/assistant/system "
                            f"(map it: --set task.roles={role}=assistant)")
        out.append({"role": mapped, "content": _text(content, f"turn {i} of {what}", number)})
    return out


def to_example(row: dict[str, Any], fmt: str, fields: dict[str, str], roles: dict[str, str],
               system: str | None, number: int, where: str) -> dict[str, Any]:
    """Row ``number`` (1-based) of ``where`` as turns (see the module docstring)."""
    if fmt == "auto":
        fmt = detect_format(row, fields, number, where)
    columns = {name: _column(fields, name) for name in _CANONICAL[fmt]}
    for name, column in columns.items():
        optional = name in ("input", "system") or (fmt == "messages" and name == "messages")
        if column not in row and not optional:
            raise TaskError(f"task.format={fmt} reads column {column!r}, which row {number} of "
                            f"{where} lacks (columns: {', '.join(row)}); map it: --set "
                            f"task.fields={name}=COLUMN")
    if fmt == "text":
        return {"text": _text(row[columns["text"]], columns["text"], number), "format": fmt}
    if fmt == "messages":
        column = columns["messages"]
        if column not in row:
            column = "conversations" if "conversations" in row else column
        if column not in row:
            raise TaskError(f"task.format=messages reads column {column!r}, which row {number} "
                            f"of {where} lacks (columns: {', '.join(row)}); map it: --set "
                            "task.fields=messages=COLUMN")
        turns = [{**t, "completion": False}
                 for t in _messages(row[column], roles, number, column)]
        turns[-1]["completion"] = True
    elif fmt == "prompt-completion":
        prompt, completion = row[columns["prompt"]], row[columns["completion"]]
        head = (_messages(prompt, roles, number, columns["prompt"]) if isinstance(prompt, list)
                else [{"role": "user", "content": _text(prompt, columns["prompt"], number)}])
        tail = (_messages(completion, roles, number, columns["completion"])
                if isinstance(completion, list) else
                [{"role": "assistant",
                  "content": _text(completion, columns["completion"], number)}])
        turns = [{**t, "completion": False} for t in head] + [
            {**t, "completion": True} for t in tail]
    else:  # alpaca: the instruction, then its input (if any) as one user turn
        instruction = _text(row[columns["instruction"]], columns["instruction"], number)
        extra = row.get(columns["input"])
        query = instruction + (f"\n\n{extra}" if isinstance(extra, str) and extra.strip() else "")
        turns = [{"role": "user", "content": query, "completion": False},
                 {"role": "assistant", "content": _text(row[columns["output"]], columns["output"],
                                                        number), "completion": True}]
        own = row.get(columns["system"])
        if isinstance(own, str) and own.strip() and not system:
            system = own
    if system and turns[0]["role"] != "system":
        turns.insert(0, {"role": "system", "content": system, "completion": False})
    if turns[-1]["role"] != "assistant":
        raise TaskError(f"row {number} of {where}: the last turn is {turns[-1]['role']!r}, not "
                        "the assistant's (the answer to learn): end each conversation with an "
                        "assistant turn, or map its role with task.roles")
    return {"turns": turns, "format": fmt}
