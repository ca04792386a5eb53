"""The one place configuration is read: environment variables prefixed ``ORDERAGENT_`` or a ``.env`` file."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Literal

from pydantic import Field, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

PROJECT_ROOT = Path(__file__).resolve().parent.parent

Autonomy = Literal["shadow", "assist", "auto"]


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="ORDERAGENT_", env_file=".env", extra="ignore", populate_by_name=True)

    environment: Literal["development", "test", "production"] = "development"
    database_url: str = Field(
        default=f"sqlite:///{PROJECT_ROOT / 'var' / 'orderagent.db'}",
        validation_alias="DATABASE_URL",
    )
    data_dir: Path = Field(default=PROJECT_ROOT.parent / "shared" / "data", validation_alias="DATA_DIR")
    seed: int = 7
    currency: str = "USD"

    # Planner: "playbook" (embedded, deterministic) or "llm" (any OpenAI-compatible endpoint).
    planner: Literal["playbook", "llm"] = "playbook"
    llm_base_url: str = "http://127.0.0.1:8010/v1"
    llm_api_key: str = "changethis"
    llm_model: str = "gpt-4o-mini"
    llm_timeout_s: float = 20.0
    llm_max_retries: int = 2
    llm_max_steps: int = 6
    llm_max_tokens: int = 20_000

    # Guardrails and approvals.
    policy_file: Path = PROJECT_ROOT / "guardrails" / "policy.json"
    autonomy_default: Autonomy = "auto"
    autonomy_overrides: dict[str, Autonomy] = {}
    approval_ttl_s: int = 900
    correlation_window_s: int = 600
    # The service runs an incident once its events pause this long (more events of a storm join it
    # first instead of each starting a run), and at the latest this long after the first one.
    intake_debounce_ms: int = 200
    intake_max_wait_ms: int = 1000
    # POST /events answers 503 (repeat it) when its events are not committed within this time
    intake_timeout_s: float = 30.0
    # an incident left open, investigating or executing with no change for this long (its run was cut
    # short: the process stopped) is run again by the service's worker
    recover_after_s: int = 30
    # a process running an incident holds its run lease; one that died holding it blocks the incident
    # this long at most (the holder renews it every third of this while the run lasts)
    run_lease_s: float = 60.0

    # Service.
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 1_000_000
    # a token authenticated lately is trusted this long without a database read (0: every request);
    # a revocation reaches other processes within this time
    auth_cache_s: float = 5.0

    log_json: bool = True
    log_level: str = "INFO"

    @model_validator(mode="after")
    def _refuse_placeholder_secrets(self) -> Settings:
        # API tokens are random and stored hashed (nothing is signed with a server secret); the one
        # secret the service holds is the LLM endpoint's key, when the LLM plans
        if self.environment == "production" and self.planner == "llm" and self.llm_api_key == "changethis":
            raise ValueError("ORDERAGENT_LLM_API_KEY is still 'changethis' in production with the LLM planner")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    def autonomy_for(self, exception_type: str) -> Autonomy:
        return self.autonomy_overrides.get(exception_type, self.autonomy_default)


# from the strictest: shadow proposes only, assist asks for every write, auto lets the policy decide
AUTONOMY_ORDER: tuple[Autonomy, ...] = ("shadow", "assist", "auto")


def strictest_autonomy(settings: Settings, exception_types: list[str]) -> Autonomy:
    return min((settings.autonomy_for(t) for t in exception_types), key=AUTONOMY_ORDER.index)


@lru_cache
def get_settings() -> Settings:
    return Settings()
