"""The `models:` section: models defined by shape in the topology file (see fabric.kv.models)."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import yaml

    from fabric.kv.models import ModelSpec
    from fabric.topology.walker import Walker


def parse_models(w: Walker, node: yaml.Node) -> dict[str, ModelSpec]:
    raise w.error(node, "models", "the models section is not implemented yet")
