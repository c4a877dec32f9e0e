"""Keep secrets out of what an experiment writes and uploads: values of secret-looking names, and credentials in URLs.

The rule (documented in the README's guarantees):

- A *name* is secret-looking when one of its words (split at ``_``, ``-``, ``.``, spaces and camelCase) is
  ``password``, ``passwd``, ``pwd``, ``passphrase``, ``secret``, ``token``, ``credential(s)``, ``auth``,
  ``authorization``, ``apikey`` or ``signature``, or two adjacent words are ``api key``, ``access key``, ``private
  key`` or ``session key``. ``hf_token``, ``wandb_api_key``, ``AWS_SECRET_ACCESS_KEY``, ``db-password`` and
  ``clientSecret`` are; ``max_tokens``, ``tokenizer`` and ``key_dim`` are not.
- Its value becomes ``"***"`` in a mapping (at any depth), and in a command line (``--hf-token X``,
  ``--hf-token=X``, ``HF_TOKEN=X``).
- In every string, the user and password of a URL (``https://user:pass@host``) become ``***``.

:class:`~aitoolbox.experiment.ExperimentWriter` applies it to the hyperparameters, the command line it records and
the summary unless it is made with ``redact=False``.
"""

from __future__ import annotations

import itertools
import re
from collections.abc import Mapping, Sequence
from typing import Any

__all__ = ["REDACTED", "is_secret_name", "redact", "redact_argv", "redact_url"]

REDACTED = "***"
_WORDS = set(
    "password passwd pwd passphrase secret token credential credentials auth authorization apikey signature".split()
)
_PAIRS = {("api", "key"), ("access", "key"), ("private", "key"), ("session", "key")}
_CAMEL = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_URL_USER = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.\-]*://)[^/\s@]+@")


def is_secret_name(name: object) -> bool:
    """Whether ``name`` looks like the name of a secret (the rule above).

    >>> [is_secret_name(n) for n in ("hf_token", "wandb_api_key", "AWS_SECRET_ACCESS_KEY", "clientSecret", "lr")]
    [True, True, True, True, False]
    >>> [is_secret_name(n) for n in ("max_tokens", "tokenizer", "key_dim", "num_passes")]
    [False, False, False, False]
    """
    if not isinstance(name, str):
        return False
    words = [w for w in re.split(r"[^a-z0-9]+", _CAMEL.sub("_", name).lower()) if w]
    return any(w in _WORDS for w in words) or any(pair in _PAIRS for pair in itertools.pairwise(words))


def redact_url(text: str) -> str:
    """``text`` with the credentials of every URL in it replaced.

    >>> redact_url("endpoint http://AKIA123:s3cr3t@minio:9000/bucket")
    'endpoint http://***@minio:9000/bucket'
    """
    return _URL_USER.sub(lambda m: f"{m['scheme']}{REDACTED}@", text)


def redact(value: Any) -> Any:
    """A copy of ``value`` (mappings, lists, tuples, strings) with secret-looking keys' values and URL credentials
    redacted; other values as they are.

    >>> redact({"lr": 0.1, "hf_token": "hf_abc", "db": {"password": "x", "url": "postgres://u:p@h/db"}})
    {'lr': 0.1, 'hf_token': '***', 'db': {'password': '***', 'url': 'postgres://***@h/db'}}
    """
    if isinstance(value, str):
        return redact_url(value)
    if isinstance(value, Mapping):
        return {k: REDACTED if is_secret_name(k) else redact(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        items = [redact(v) for v in value]
        return items if isinstance(value, list) else tuple(items)
    return value


def redact_argv(argv: Sequence[str]) -> list[str]:
    """A command line with the values of secret-looking options and assignments redacted.

    >>> redact_argv(["train.py", "--lr", "0.1", "--hf-token", "hf_abc", "--api_key=k", "WANDB_API_KEY=w"])
    ['train.py', '--lr', '0.1', '--hf-token', '***', '--api_key=***', 'WANDB_API_KEY=***']
    """
    out: list[str] = []
    hide_next = False
    for arg in argv:
        if hide_next and not arg.startswith("-"):
            out.append(REDACTED)
            hide_next = False
            continue
        hide_next = False
        name, eq, _ = arg.partition("=")
        if eq and is_secret_name(name.lstrip("-")):
            out.append(f"{name}={REDACTED}")
        elif arg.startswith("-") and is_secret_name(arg.lstrip("-")):
            out.append(arg)
            hide_next = True
        else:
            out.append(redact_url(arg))
    return out
