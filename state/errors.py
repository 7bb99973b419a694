"""Named errors the stores raise; each maps one database refusal to something a person can act on."""

from __future__ import annotations


class StoreError(Exception):
    """Base class for every refusal or failure of a state store."""


class IllegalTransitionError(StoreError):
    """The resource's state machine has no arrow from its current state to the requested one."""


class UnknownResourceError(StoreError):
    """No resource with that id is registered."""


class StaleStateError(StoreError):
    """The caller expected the resource in another state than the one it is in."""


class SchemaDriftError(StoreError):
    """The database does not know a state or machine the code uses: a migration is missing."""


class InvalidValueError(StoreError):
    """The database refused a value itself (a NUL character, a value out of range): the same
    request would be refused again, so it is not retried."""


class StoreUnavailableError(StoreError):
    """The database could not be reached; temporary, so callers retry."""


class FailureType:
    """`ApplicationError.type` names shared by activities (which raise) and workflows (which branch).

    Workflows may not import activities, so the names live here with the other domain errors.
    """

    BUILD_FAILED = "BuildFailed"
    DEPLOY_FAILED = "DeployFailed"
    HEALTH_CHECK_FAILED = "McpHealthCheckFailed"
    ILLEGAL_TRANSITION = "IllegalTransition"
    UNKNOWN_RESOURCE = "UnknownResource"
    STALE_STATE = "StaleState"
    SCHEMA_DRIFT = "SchemaDrift"
    INVALID_VALUE = "InvalidValue"

    # Permanent: retrying cannot help, a person must act (kopf's PermanentError).
    NON_RETRYABLE = (
        BUILD_FAILED,
        DEPLOY_FAILED,
        HEALTH_CHECK_FAILED,
        ILLEGAL_TRANSITION,
        UNKNOWN_RESOURCE,
        STALE_STATE,
        SCHEMA_DRIFT,
        INVALID_VALUE,
    )
