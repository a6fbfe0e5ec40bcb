"""What the Matter server has told us about its nodes: availability and attribute values.

Fed by `start_listening` (every node, with all attributes), `node_added`/`node_updated` (a whole
node), `attribute_updated` (`[node_id, "endpoint/cluster/attribute", value]`) and `node_removed`.
Attribute values are tag-based (struct keys are field ids), but every attribute read here is a
plain number or bool. Fixed-quality attributes (capacities, PIN lengths) are read from here
rather than over the radio.
"""

from __future__ import annotations

from typing import Any

from portner.locks.matter.cluster import BAT_PERCENT_REMAINING, DOOR_LOCK, POWER_SOURCE


class UnknownNode(LookupError):
    """The Matter server has no such node, or it has no Door Lock endpoint."""


class NodeCache:
    def __init__(self) -> None:
        self._nodes: dict[int, dict[str, Any]] = {}
        self._jammed: dict[str, bool] = {}

    def replace_all(self, nodes: list[dict[str, Any]]) -> None:
        self._nodes = {}
        for node in nodes:
            self.put(node)

    def put(self, node: dict[str, Any]) -> None:
        if isinstance(node, dict) and isinstance(node.get("node_id"), int):
            attributes = node.get("attributes")
            self._nodes[node["node_id"]] = {
                "available": node.get("available"),
                "attributes": dict(attributes) if isinstance(attributes, dict) else {},
            }

    def remove(self, node_id: Any) -> None:
        if isinstance(node_id, int):
            self._nodes.pop(node_id, None)

    def update_attribute(self, node_id: Any, path: Any, value: Any) -> None:
        node = self._nodes.get(node_id) if isinstance(node_id, int) else None
        if node is not None and isinstance(path, str):
            node["attributes"][path] = value

    def mark_all_unknown(self) -> None:
        """The connection to the server dropped: nobody's availability is known any more."""
        for node in self._nodes.values():
            node["available"] = None

    def available(self, node_id: int) -> bool | None:
        node = self._nodes.get(node_id)
        value = node.get("available") if node else None
        return value if isinstance(value, bool) else None

    def attribute(self, node_id: int, endpoint: int, cluster: int, attribute: int) -> Any:
        node = self._nodes.get(node_id)
        return node["attributes"].get(f"{endpoint}/{cluster}/{attribute}") if node else None

    def door_lock_endpoint(self, node_id: int) -> int:
        node = self._nodes.get(node_id)
        if node is None:
            raise UnknownNode(f"the Matter server has no node {node_id}")
        for path in node["attributes"]:
            endpoint, _, rest = path.partition("/")
            if rest.startswith(f"{DOOR_LOCK}/") and endpoint.isdigit():
                return int(endpoint)
        raise UnknownNode(f"Matter node {node_id} has no Door Lock endpoint")

    def battery_percent(self, node_id: int) -> float | None:
        node = self._nodes.get(node_id)
        if node is None:
            return None
        for path, value in node["attributes"].items():
            _, cluster, attribute = (path.split("/") + ["", ""])[:3]
            if cluster == str(POWER_SOURCE) and attribute == str(BAT_PERCENT_REMAINING):
                return value / 2 if isinstance(value, int) else None
        return None

    def set_jammed(self, address: str, jammed: bool) -> bool:
        """Record the jam state; return True when it changed."""
        changed = self._jammed.get(address, False) != jammed
        self._jammed[address] = jammed
        return changed

    def jammed(self, address: str) -> bool | None:
        return self._jammed.get(address)
