"""``segkit models`` (list, with cache state and resolved revision) and ``segkit models download``."""

import sys

import click


@click.group("models", invoke_without_command=True)
@click.pass_context
def group(ctx):
    """List declared models (name, backend, tasks, cached, size)."""
    if ctx.invoked_subcommand:
        return
    from .. import registry
    from ..weights import is_cached, resolved_revision

    rows = [("NAME", "BACKEND", "TASKS", "CACHED", "SIZE")]
    for name in registry.list_models():
        spec = registry.get_spec(name)
        size = f"{spec.size_mb:.0f} MB" if spec.size_mb else "?"
        cached = "no"
        if is_cached(spec):
            revision = resolved_revision(spec) if "hub" in spec.weights else None
            cached = f"yes ({revision[:10]})" if revision else "yes"
        rows.append((name + ("*" if spec.default else ""), spec.backend, ",".join(spec.tasks), cached, size))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for row in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(row, widths)).rstrip())
    click.echo("* default model of its backend")


@group.command("download")
@click.argument("names", nargs=-1, required=True)
def download(names):
    """Fetch weights now, for later offline use (copy the printed cache folders to the offline machine)."""
    from .. import registry, weights
    from ..errors import WeightsUnavailableError

    specs = []
    for name in names:
        try:
            specs.append(registry.get_spec(name))
        except KeyError as exc:
            raise click.BadParameter(exc.args[0], param_hint="NAMES") from None
    failed = 0
    for spec in specs:
        try:
            click.echo(f"{spec.name}: {weights.resolve(spec)}")
        except WeightsUnavailableError:
            failed += 1
            click.echo(f"error: {spec.name}: cannot reach {spec.source}; run 'segkit models download {spec.name}' "
                       f"on a machine with internet access, then copy {weights.cache_location(spec)} to the same "
                       "place on this machine (or pass --weights PATH to the segmenting command)", err=True)
    sys.exit(1 if failed else 0)
