"""``MeshClient``: register, inspect and call models of a running mesh over REST."""

from __future__ import annotations

from typing import Any

import httpx


class MeshClientError(Exception):
    """An error answered by the mesh (``status`` is the HTTP status) or a connection failure (0)."""

    def __init__(self, message: str, status: int = 0) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


class MeshClient:
    def __init__(self, url: str = "http://127.0.0.1:8008", *, timeout: float = 120.0, token: str = "") -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self.url = url.rstrip("/")
        self._http = httpx.Client(base_url=self.url, timeout=timeout, headers=headers)

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> MeshClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            resp = self._http.request(method, path, **kwargs)
        except httpx.HTTPError as exc:
            raise MeshClientError(f"cannot reach the mesh at {self.url}: {exc}") from exc
        try:
            body = resp.json()
        except ValueError:
            body = {"error": resp.text}
        if resp.status_code >= 400:
            message = body.get("error") if isinstance(body, dict) else None
            raise MeshClientError(message or f"HTTP {resp.status_code}", resp.status_code)
        return body

    # -- models ----------------------------------------------------------------------------------
    def models(self) -> list[dict[str, Any]]:
        return self._call("GET", "/mesh/v1/models")["models"]

    def status(self, model_id: str) -> dict[str, Any]:
        return self._call("GET", f"/mesh/v1/models/{model_id}")

    def register(self, model_id: str, model_type: str, path: str = "", key: str = "", *, load_now: bool = False,
                 sync: bool = False) -> dict[str, Any]:
        body = {"modelInfo": {"type": model_type, "path": path, "key": key}, "loadNow": load_now, "sync": sync}
        return self._call("PUT", f"/mesh/v1/models/{model_id}", json=body)

    def unregister(self, model_id: str) -> None:
        self._call("DELETE", f"/mesh/v1/models/{model_id}")

    def ensure_loaded(self, model_id: str, *, sync: bool = False) -> dict[str, Any]:
        return self._call("POST", f"/mesh/v1/models/{model_id}/ensure-loaded", json={"sync": sync})

    # -- vmodels ---------------------------------------------------------------------------------
    def set_vmodel(self, vmodel_id: str, target: str, **options: Any) -> dict[str, Any]:
        return self._call("PUT", f"/mesh/v1/vmodels/{vmodel_id}", json={"targetModelId": target, **options})

    def vmodel(self, vmodel_id: str) -> dict[str, Any]:
        return self._call("GET", f"/mesh/v1/vmodels/{vmodel_id}")

    def delete_vmodel(self, vmodel_id: str) -> None:
        self._call("DELETE", f"/mesh/v1/vmodels/{vmodel_id}")

    # -- inference and server --------------------------------------------------------------------
    def infer(self, name: str, request: dict[str, Any]) -> dict[str, Any]:
        return self._call("POST", f"/v2/models/{name}/infer", json=request)

    def metadata(self, name: str) -> dict[str, Any]:
        return self._call("GET", f"/v2/models/{name}")

    def server_status(self) -> dict[str, Any]:
        return self._call("GET", "/mesh/v1/status")
