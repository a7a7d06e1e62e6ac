"""The registry client: push, pull, load, cache, transfers."""

from .api import AliasMoved, Client, PushResult, ResolvedRef, check_folder, parse_ref
from .cache import Cache
from .config import ClientConfig, forget_login, save_login
from .http import RegistryAuthError, RegistryError, RegistryNotFound, RegistryUnavailable
from .merges import MergeJob, MergeJobFailed
from .transfers import IntegrityError
from .trust import UnsafeResponse

__all__ = [
    "AliasMoved",
    "Cache",
    "Client",
    "ClientConfig",
    "IntegrityError",
    "MergeJob",
    "MergeJobFailed",
    "PushResult",
    "RegistryAuthError",
    "RegistryError",
    "RegistryNotFound",
    "RegistryUnavailable",
    "ResolvedRef",
    "UnsafeResponse",
    "check_folder",
    "forget_login",
    "parse_ref",
    "save_login",
]
