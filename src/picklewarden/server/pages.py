"""The evidence pages: server-rendered HTML (Jinja2, autoescaped), no JavaScript, no external resources.

Every string shown comes from a hostile file at some point (names, decompiled code, indicators), so it is
only ever inserted through autoescaping; the program listing is split into lines here and marked by the
``!!``/``!`` flags ``picklewarden show`` puts on them, never interpreted as markup.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

from fastapi import APIRouter, HTTPException, Request
from fastapi.responses import HTMLResponse, JSONResponse
from fastapi.templating import Jinja2Templates

from picklewarden import __version__
from picklewarden.model import Finding, Indicator, Report
from picklewarden.report import json as json_report
from picklewarden.server.gateway import REPO_PREFIXES, Gateway, report_of

TEMPLATES = Jinja2Templates(directory=str(Path(__file__).parent / "templates"))
_RECENT = 50


@dataclass(frozen=True)
class Line:
    mark: str
    """``malicious``, ``suspicious`` or ``''``."""
    text: str


def program_lines(program: str) -> list[Line]:
    lines = []
    for text in program.splitlines():
        mark = "malicious" if text.startswith("!!") else "suspicious" if text.startswith("! ") else ""
        lines.append(Line(mark, text))
    return lines


def indicators(findings: tuple[Finding, ...]) -> list[Indicator]:
    seen: dict[tuple[str, str], Indicator] = {}
    for f in findings:
        for i in f.indicators:
            seen.setdefault((i.kind, i.value), i)
    return list(seen.values())


def _when(timestamp: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(timestamp))


def router(gateway: Gateway) -> APIRouter:
    pages = APIRouter(include_in_schema=False)

    def render(request: Request, template: str, status: int = 200, **context: object) -> HTMLResponse:
        context.update(version=__version__, when=_when, upstream=gateway.config.upstream_base)
        return TEMPLATES.TemplateResponse(request, template, context, status_code=status)

    @pages.get("/", response_class=HTMLResponse)
    async def dashboard(request: Request) -> HTMLResponse:
        scans = gateway.store.recent_scans(_RECENT, private=False)
        refused = [s for s in scans if gateway.refused(s)]
        return render(request, "dashboard.html", scans=scans, refused=refused)

    @pages.get("/ui/repos/{repo_type}/{repo:path}", response_class=HTMLResponse)
    async def repo_page(request: Request, repo_type: str, repo: str) -> HTMLResponse:
        if repo_type not in REPO_PREFIXES:
            raise HTTPException(404, "no such repository type")
        files = gateway.store.repo_files(repo_type, repo, private=False)
        code = [f for f in files if f.code]
        status = 200 if files else 404
        return render(request, "repo.html", status, repo_type=repo_type, repo=repo, files=files, code=code)

    # Before the HTML route, which would otherwise take the id "ID.json".
    @pages.get("/ui/scans/{scan_id}.json")
    async def scan_json(scan_id: str) -> JSONResponse:
        record = gateway.store.get_scan(scan_id)
        if record is None or record.private:
            raise HTTPException(404, "no such scan")
        return JSONResponse(json_report.document(Report((report_of(record),))))

    @pages.get("/ui/scans/{scan_id}", response_class=HTMLResponse, name="scan_page")
    async def scan_page(request: Request, scan_id: str) -> HTMLResponse:
        record = gateway.store.get_scan(scan_id)
        if record is None or record.private:
            return render(request, "missing.html", 404, scan_id=scan_id)
        report = report_of(record)
        return render(
            request, "scan.html", scan=record, report=report, refused=gateway.refused(record),
            lines=program_lines(record.program), indicators=indicators(report.findings),
        )  # fmt: skip

    return pages
