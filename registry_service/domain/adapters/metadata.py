"""An adapter's description and tags: the same bounds on a push (form or Hub), an edit (PATCH) and a
merge job's output, so no route stores what another would refuse."""

from __future__ import annotations

from collections.abc import Iterable

from sdk.problems import Problem

from ...errors import UploadRejected

#: Longest description, in characters (a summary; the model card is README.md).
MAX_DESCRIPTION_CHARS = 4096
#: Most tags on one adapter.
MAX_TAGS = 32
#: Longest tag: ``adapter.tags`` is VARCHAR(64)[], and PostgreSQL would silently cut a longer one.
MAX_TAG_CHARS = 64


def clean_tags(tags: Iterable[str]) -> list[str]:
    """Tags stripped, without empty ones or repeats, sorted."""
    return sorted({str(t).strip() for t in tags if str(t).strip()})


def metadata_problems(description: str | None, tags: Iterable[str] | None) -> list[Problem]:
    """Every way ``description`` and ``tags`` (None: not given) break the bounds above."""
    problems: list[Problem] = []
    if description is not None:
        if len(description) > MAX_DESCRIPTION_CHARS:
            problems.append(Problem(None, f"<= {MAX_DESCRIPTION_CHARS} characters", f"{len(description)} characters",
                                    f"the description is {len(description)} characters long; the limit is "
                                    f"{MAX_DESCRIPTION_CHARS} (put longer text in README.md)"))
        if "\x00" in description:
            problems.append(Problem(None, None, "NUL (0x00)",
                                    f"description {description[:80]!r} contains a NUL character"))
    if tags is not None:
        cleaned = clean_tags(tags)
        if len(cleaned) > MAX_TAGS:
            problems.append(Problem(None, f"<= {MAX_TAGS} tags", f"{len(cleaned)} tags",
                                    f"{len(cleaned)} tags; an adapter has at most {MAX_TAGS}"))
        for tag in cleaned[: MAX_TAGS + 1]:
            if len(tag) > MAX_TAG_CHARS:
                problems.append(Problem(None, f"<= {MAX_TAG_CHARS} characters", f"{len(tag)} characters",
                                        f"tag {tag[:80]!r} is longer than {MAX_TAG_CHARS} characters"))
            if "\x00" in tag:
                problems.append(Problem(None, None, "NUL (0x00)", f"tag {tag[:80]!r} contains a NUL character"))
    return problems


def check_metadata(description: str | None, tags: Iterable[str] | None) -> None:
    """422 listing every problem of :func:`metadata_problems`."""
    problems = metadata_problems(description, tags)
    if problems:
        raise UploadRejected(problems)


def check_output_metadata(description: str | None, tags: Iterable[str] | None) -> list[Problem]:
    """:func:`metadata_problems` of a merge job's output, each message saying where it is."""
    return [Problem(p.tensor, p.expected, p.found, f"output: {p.message}")
            for p in metadata_problems(description, tags)]


__all__ = ["MAX_DESCRIPTION_CHARS", "MAX_TAGS", "MAX_TAG_CHARS", "check_metadata", "check_output_metadata",
           "clean_tags", "metadata_problems"]
