"""Search attributes every lifecycle upserts, so a Temporal UI filter can act as an inbox."""

from __future__ import annotations

from temporalio.common import SearchAttributeKey

RESOURCE_TYPE = SearchAttributeKey.for_keyword("ResourceType")
RESOURCE_STATE = SearchAttributeKey.for_keyword("ResourceState")
OWNER_TEAM = SearchAttributeKey.for_keyword("OwnerTeam")
BLOCKED_ON = SearchAttributeKey.for_keyword_list("BlockedOn")

ALL = (RESOURCE_TYPE, RESOURCE_STATE, OWNER_TEAM, BLOCKED_ON)
