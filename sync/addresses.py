"""An email address as mailsync keys it: the one definition of a member's key
(``normalise_email``) and of Mailchimp's member id (``subscriber_hash``).

Shared vocabulary: imported by the layers and by the emulator, imports none.
"""

from __future__ import annotations

import hashlib


def normalise_email(email: str) -> str:
    """The key under which a member is remembered: trimmed and lower-cased
    (Mailchimp identifies members by the lower-cased address)."""
    return email.strip().lower()


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address (trimmed)."""
    return hashlib.md5(normalise_email(email).encode("utf-8"), usedforsecurity=False).hexdigest()
