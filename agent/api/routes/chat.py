"""Dispatcher chat: one conversation per thread, answers streamed as server-sent events.

A thread belongs to whoever wrote its first message: only they post to it; supervisors and admins may
read it (a chat can matter in a review); another dispatcher gets 404, as if the thread did not exist."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Annotated

from fastapi import APIRouter, HTTPException, Path, Request
from fastapi.responses import StreamingResponse
from sqlmodel import Session, col, select

from agent.api import service
from agent.api.deps import AUTH_RESPONSES, DispatcherDep, EngineDep, SessionDep
from agent.api.models import ChatIn, ChatMessage, ChatMessagePublic, Principal, Role
from agent.chat import ChatEngine, ChatTurn

router = APIRouter(prefix="/chat", tags=["chat"], responses=AUTH_RESPONSES)

ThreadId = Annotated[str, Path(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9_.:-]+$")]


def thread_owner(session: Session, thread_id: str) -> str | None:
    """The author of the thread's first message, or None for a new thread."""
    stmt = (
        select(ChatMessage.actor_id)
        .where(ChatMessage.thread_id == thread_id, ChatMessage.role == "user")
        .order_by(col(ChatMessage.id))
        .limit(1)
    )
    return session.exec(stmt).first()


def check_access(session: Session, thread_id: str, principal: Principal, *, write: bool) -> None:
    owner = thread_owner(session, thread_id)
    if owner is None or owner == principal.name:
        return
    if not write and principal.role in (Role.supervisor, Role.admin):
        return
    raise HTTPException(status_code=404, detail="no such chat thread")


def sse(event: str, data: object) -> str:
    return f"event: {event}\ndata: {json.dumps(data, default=str)}\n\n"


@router.get("/{thread_id}", response_model=list[ChatMessagePublic])
def get_thread(thread_id: ThreadId, session: SessionDep, principal: DispatcherDep) -> list[ChatMessagePublic]:
    """The thread's messages, oldest first (its owner, or a supervisor reading it)."""
    check_access(session, thread_id, principal, write=False)
    return [
        ChatMessagePublic.model_validate(m, from_attributes=True)
        for m in service.list_chat_messages(session=session, thread_id=thread_id)
    ]


@router.post(
    "/{thread_id}",
    response_class=StreamingResponse,
    responses={
        200: {"content": {"text/event-stream": {}}, "description": "delta events, then done"},
        404: {"description": "the thread belongs to someone else"},
    },
)
def post_message(
    thread_id: ThreadId, body: ChatIn, request: Request, engine: EngineDep, principal: DispatcherDep
) -> StreamingResponse:
    """Ask the agent; the answer streams as `delta` events ({"text": ...}) and ends with `done`."""
    worker = request.app.state.worker
    with Session(engine, expire_on_commit=False) as session:
        check_access(session, thread_id, principal, write=True)
        history = [
            ChatTurn(role=m.role, content=m.content)
            for m in service.list_chat_messages(session=session, thread_id=thread_id, limit=40)
        ]
        service.add_chat_message(
            session=session, thread_id=thread_id, role="user", content=body.message, actor_id=principal.name
        )
        session.commit()
    chat = ChatEngine(
        engine=engine,
        settings=request.app.state.settings,
        submit=worker.submit if worker.runtime is not None else None,
        clock=worker.clock,
        llm_client=getattr(request.app.state, "llm_client", None),
    )

    def stream() -> Iterator[str]:
        parts: list[str] = []
        try:
            for piece in chat.answer(body.message, history=history, actor=principal.name):
                parts.append(piece)
                yield sse("delta", {"text": piece})
        except Exception as exc:  # the stream has started: report the failure in-band
            parts.append(f"(error: {type(exc).__name__})")
            yield sse("error", {"message": "the assistant failed to answer"})
        answer = "".join(parts)
        with Session(engine, expire_on_commit=False) as session:
            service.add_chat_message(session=session, thread_id=thread_id, role="assistant", content=answer)
            session.commit()
        yield sse("done", {"thread_id": thread_id, "text": answer})

    return StreamingResponse(stream(), media_type="text/event-stream", headers={"Cache-Control": "no-cache"})
