"""The web console: server-rendered pages that call the JSON API with the token kept in sessionStorage.

The pages carry no data themselves (so they need no authentication); everything they show comes from the
API, which checks the role on every call. The role only decides which controls a page offers.
"""

from __future__ import annotations

from pathlib import Path as FsPath
from typing import Annotated

from fastapi import APIRouter, Path, Request
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.templating import Jinja2Templates

TEMPLATES = Jinja2Templates(directory=FsPath(__file__).resolve().parent.parent.parent / "web" / "templates")

router = APIRouter(include_in_schema=False)


@router.get("/")
def index() -> RedirectResponse:
    return RedirectResponse("/console/signin", status_code=303)


@router.get("/console/signin", response_class=HTMLResponse)
def signin(request: Request) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "signin.html", {"page": "signin"})


@router.get("/console/dispatcher", response_class=HTMLResponse)
def dispatcher(request: Request) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "dispatcher.html", {"page": "dispatcher"})


@router.get("/console/supervisor", response_class=HTMLResponse)
def supervisor(request: Request) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "supervisor.html", {"page": "supervisor"})


@router.get("/console/incidents/{incident_id}", response_class=HTMLResponse)
def incident(request: Request, incident_id: Annotated[str, Path(max_length=128)]) -> HTMLResponse:
    return TEMPLATES.TemplateResponse(request, "incident.html", {"page": "incident", "incident_id": incident_id})
