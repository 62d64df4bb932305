"""Which conditions of two runs correspond: models by name (or the one model of each run), conditions by name,
and conditions of a sweep over `layers` by relative depth when the models' depths differ (layer l of A <->
round(l * (n_B - 1) / (n_A - 1)) of B; depths from the cells' `model_provenance`). `template_regex` also
serves the report, which finds the conditions a sweep template expanded to."""

from __future__ import annotations

import re

from mechsteer.errors import MechsteerError


def template_regex(template: str, patterns: dict[str, str]) -> re.Pattern:
    """A regex matching the names a sweep template `single_{layer}` expands to, one named group per variable."""
    parts, seen, pos = [], set(), 0
    for m in re.finditer(r"\{([A-Za-z_]\w*)\}", template):  # plain `{var}` only (spec.sweeps' rule)
        var = m.group(1)
        parts.append(re.escape(template[pos : m.start()]))
        parts.append(f"(?P={var})" if var in seen else f"(?P<{var}>{patterns.get(var, '.+?')})")
        seen.add(var)
        pos = m.end()
    parts.append(re.escape(template[pos:]))
    return re.compile("^" + "".join(parts) + "$")


def relative_layer(layer: int, n_from: int, n_to: int) -> int:
    """The layer of an n_to-layer model at the relative depth of `layer` in an n_from-layer model."""
    if n_from == n_to or n_from <= 1:
        return layer
    return int(round(layer * (n_to - 1) / (n_from - 1)))


def n_layers(results) -> dict[str, int]:
    """model -> its number of blocks, from the first recorded cell of each model."""
    out: dict[str, int] = {}
    for c in results.recorded():
        if c["model"] in out:
            continue
        n = (results.store.read_record(c["hash"]).get("model_provenance") or {}).get("n_layers")
        if isinstance(n, int):
            out[c["model"]] = n
    return out


def explicit_layers(var: str, values) -> bool:
    """A sweep over an explicit list of block indices (`{layer: [0, 6, 12]}`, a subset of the blocks): the
    variable is named `layer(s)` or `block(s)` and takes whole numbers."""
    return (
        var.rstrip("s") in ("layer", "block")
        and isinstance(values, list)
        and bool(values)
        and all(isinstance(x, int) and not isinstance(x, bool) for x in values)
    )


def layer_templates(results) -> list[tuple[str, re.Pattern, list[str]]]:
    """(template, regex, layer variables) of the study's sweep conditions that sweep over `layers` (the named
    range, or an explicit list of blocks: `explicit_layers`)."""
    out = []
    for name, sweep in results.sweeps().items():
        layer_vars = [v for v, r in sweep.items() if r == "layers" or explicit_layers(v, r)]
        if layer_vars:
            out.append((name, template_regex(name, {v: r"-?\d+" for v in sweep}), layer_vars))
    return out


def match_conditions(
    conds_a: list[str],
    conds_b: list[str],
    n_a: int | None,
    n_b: int | None,
    templates: list[tuple[str, re.Pattern, list[str]]],
) -> list[tuple[str, str, str]]:
    """(condition in A, condition in B, how) pairs: by name, or for layer-sweep conditions by relative depth when
    the depths differ."""
    in_b = set(conds_b)
    out = []
    for ca in conds_a:
        if n_a and n_b and n_a != n_b:
            mapped = None
            for template, rx, layer_vars in templates:
                m = rx.match(ca)
                if m:
                    values = {
                        k: (str(relative_layer(int(v), n_a, n_b)) if k in layer_vars else v)
                        for k, v in m.groupdict().items()
                    }
                    mapped = template.format(**values)
                    break
            if mapped is not None:
                if mapped in in_b:
                    out.append((ca, mapped, f"relative depth ({n_a} -> {n_b} layers)"))
                continue
        if ca in in_b:
            out.append((ca, ca, "name"))
    return out


def match_models(a, b) -> list[tuple[str, str]]:
    """(model of A, model of B) pairs: the shared names, or the one model of each run."""
    ma = list(dict.fromkeys(c["model"] for c in a.recorded()))
    mb = list(dict.fromkeys(c["model"] for c in b.recorded()))
    shared = [m for m in ma if m in mb]
    if shared:
        return [(m, m) for m in shared]
    if len(ma) == 1 and len(mb) == 1:
        return [(ma[0], mb[0])]
    raise MechsteerError(
        f"{a.output_dir} (models {ma}) and {b.output_dir} (models {mb}) share no model name",
        hint="diff runs whose models have the same names, or runs of one model each",
    )


__all__ = [
    "explicit_layers",
    "layer_templates",
    "match_conditions",
    "match_models",
    "n_layers",
    "relative_layer",
    "template_regex",
]
