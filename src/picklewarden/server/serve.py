"""``picklewarden serve``: the command's options and start-up (registered by :mod:`picklewarden.cli`)."""

from __future__ import annotations

from pathlib import Path

import click


@click.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Interface to listen on.")
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--upstream", default="https://huggingface.co", show_default=True, help="The hub to proxy.")
@click.option(
    "--data-dir", required=True, type=click.Path(file_okay=False), help="File cache and the default SQLite store."
)
@click.option("--db", help="postgresql://... to share results between replicas (default: SQLite in --data-dir).")
@click.option("--policy", "policy_file", type=click.Path(exists=True, dir_okay=False), help="Policy file.")
@click.option(
    "--token-file",
    type=click.Path(exists=True, dir_okay=False),
    help="File holding the bearer token for uploads and private results (without it, uploads are off).",
)
@click.option("--max-upload", default=1 << 30, show_default=True, type=int, help="Largest upload, in bytes.")
@click.option("--webhook", help="URL that receives a JSON POST for every new malicious verdict.")
def serve(
    host: str,
    port: int,
    upstream: str,
    data_dir: str,
    db: str | None,
    policy_file: str | None,
    token_file: str | None,
    max_upload: int,
    webhook: str | None,
) -> None:
    """Run the scanning gateway: point clients at it with HF_ENDPOINT=http://HOST:PORT."""
    try:
        import uvicorn

        from picklewarden.server.app import create_app
        from picklewarden.server.config import GatewayConfig
    except ImportError as exc:
        raise click.ClickException(f"the gateway needs: pip install 'picklewarden[server]' ({exc})") from exc
    from picklewarden.policy.config import Policy, PolicyError, load

    try:
        policy = load(policy_file) if policy_file else Policy()
    except PolicyError as exc:
        raise click.ClickException(str(exc)) from exc
    token = Path(token_file).read_text().strip() if token_file else None
    if token_file and not token:
        raise click.ClickException(f"{token_file} is empty")
    config = GatewayConfig(
        upstream=upstream, data_dir=Path(data_dir), db=db, policy=policy, token=token,
        max_upload=max_upload, webhook=webhook,
    )  # fmt: skip
    uvicorn.run(create_app(config), host=host, port=port, proxy_headers=True, timeout_graceful_shutdown=30)
