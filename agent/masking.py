"""Secret values masked in a task's output, over the stream rather than per chunk.

A secret can reach the pipe in pieces: printed a character at a time, in two halves, or one
line of a multi-line key at a time. Masking each chunk alone would let every piece through,
so the masker holds back the end of what it has seen whenever that end could be the start of
a secret, and releases it once the next text shows it is not (or masks it when it is). It
never holds more than the longest secret's length minus one character, so live output stays
live; at the end of the stream whatever is held is released.
"""

MASK = "********"
# Shorter values would mask ordinary text ("a", "yes", "1234"...): not masked.
MIN_MASKED = 4


def mask_values(secrets: list[str]) -> list[str]:
    """What to look for: each secret, and each line of a multi-line secret on its own (a key
    is often printed line by line), longest first so that a secret containing another is
    masked whole."""
    values: set[str] = set()
    for secret in secrets:
        lines = secret.splitlines()
        # A line as printed, and without its indentation (`echo $VAR` unquoted drops it).
        pieces = [line.strip("\r") for line in lines] + [line.strip() for line in lines]
        for value in (secret.strip("\r\n"), *pieces):
            if len(value) >= MIN_MASKED:
                values.add(value)
    return sorted(values, key=len, reverse=True)


class SecretMasker:
    """Masks one stream. `feed` returns what is safe to show now; `finish` the rest."""

    def __init__(self, values: list[str]):
        self._values = values
        self._longest = max((len(v) for v in values), default=0)
        self._held = ""

    def feed(self, text: str) -> str:
        if not self._values:
            return text
        text = self._held + text
        for value in self._values:
            if value in text:
                text = text.replace(value, MASK)
        keep = self._unfinished_tail(text)
        self._held = text[len(text) - keep:] if keep else ""
        return text[:len(text) - keep]

    def finish(self) -> str:
        held, self._held = self._held, ""
        return held

    def _unfinished_tail(self, text: str) -> int:
        """Length of the longest end of `text` that a secret starts with (but is not whole):
        the part that must wait for more text to know whether it is a secret."""
        best = 0
        for value in self._values:
            first = value[0]
            # Only ends shorter than the value can be its unfinished start.
            pos = text.find(first, max(0, len(text) - len(value) + 1))
            while pos != -1 and len(text) - pos > best:
                if value.startswith(text[pos:]):
                    best = len(text) - pos  # later positions give shorter ends
                    break
                pos = text.find(first, pos + 1)
        return best
