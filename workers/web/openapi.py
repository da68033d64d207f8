"""The API's OpenAPI 3.1 description (``GET /api/openapi.json``), written by hand."""

from __future__ import annotations

from typing import Any

from messaging.access.audit import Source
from messaging.blasts.lifecycle import BLAST_STATUSES, COUNT_KEYS
from messaging.compliance.replies import VERDICTS
from workers.web.api_surface import (
    BLAST_ACTIONS,
    MAX_AUDIT_LIMIT,
    MAX_LIST_LIMIT,
    MAX_REPLIES_LIMIT,
)


def openapi_document() -> dict[str, Any]:
    """The API's OpenAPI description, written by hand (it is small and must stay exact)."""
    error = {"$ref": "#/components/schemas/Error"}
    blast = {"$ref": "#/components/schemas/Blast"}
    reply = {"$ref": "#/components/schemas/Reply"}

    def answer(description: str, schema: dict[str, Any] | None = None) -> dict[str, Any]:
        if schema is None:
            return {"description": description}
        return {"description": description, "content": {"application/json": {"schema": schema}}}

    auth_errors = {
        "401": answer("Missing or unknown bearer operator token.", error),
        "403": answer("The operator's role does not allow this route.", error),
        "429": answer("Too many failed bearer attempts from this address.", error),
    }
    blast_id = {"name": "blast_id", "in": "path", "required": True, "schema": {"type": "string"}}
    counts = {
        "type": "object",
        "properties": {k: {"type": "integer", "minimum": 0} for k in COUNT_KEYS},
    }
    action_paths: dict[str, Any] = {
        f"/api/blasts/{{blast_id}}/{action}": {
            "post": {
                "summary": f"{action.capitalize()} a blast fleet-wide (within a second).",
                "operationId": f"{action}Blast",
                "parameters": [blast_id],
                "responses": {
                    "200": answer("The blast after the action.", blast),
                    **auth_errors,
                    "404": answer("No such blast.", error),
                    "409": answer(
                        "The blast's status does not allow this action, or its requester "
                        "tried to approve it.",
                        error,
                    ),
                },
            }
        }
        for action in BLAST_ACTIONS
    }
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Rapid Response API",
            "version": "1",
            "description": "Publish alerts and steer blasts. Bearer: an operator token "
            "(`rapid operators add`) or RAPID_API_TOKEN; each route needs a role.",
        },
        "security": [{"bearer": []}],
        "paths": {
            "/api/alerts": {
                "post": {
                    "summary": "Publish an alert (contract §4) to an alert topic.",
                    "operationId": "createAlert",
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {"schema": {"$ref": "#/components/schemas/Alert"}}
                        },
                    },
                    "responses": {
                        "202": answer(
                            "Published; the blast id is the alert id.",
                            {
                                "type": "object",
                                "required": ["blast_id", "sns_message_id"],
                                "properties": {
                                    "blast_id": {"type": "string"},
                                    "sns_message_id": {"type": "string"},
                                },
                            },
                        ),
                        **auth_errors,
                        "413": answer("Body too large."),
                        "422": answer("Invalid alert, or the topic is not provisioned.", error),
                        "503": answer("SNS did not accept the alert.", error),
                    },
                }
            },
            "/api/blasts": {
                "get": {
                    "summary": "Recent blasts, newest first.",
                    "operationId": "listBlasts",
                    "parameters": [
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_LIST_LIMIT},
                        }
                    ],
                    "responses": {
                        "200": answer("Blasts.", {"type": "array", "items": blast}),
                        **auth_errors,
                        "422": answer("Bad limit.", error),
                    },
                }
            },
            "/api/blasts/{blast_id}": {
                "get": {
                    "summary": "A blast's state and counts (as `rapid blast show --json`).",
                    "operationId": "getBlast",
                    "parameters": [blast_id],
                    "responses": {
                        "200": answer("The blast.", blast),
                        **auth_errors,
                        "404": answer("No such blast.", error),
                    },
                }
            },
            "/api/blasts/{blast_id}/export": {
                "get": {
                    "summary": "One CSV row per recipient and channel (`rapid blast export`).",
                    "operationId": "exportBlast",
                    "parameters": [blast_id],
                    "responses": {
                        "200": {
                            "description": "external_id, channel, destination, state, "
                            "error_code, sent_at, delivered_at, clicked_at, variant",
                            "content": {"text/csv": {"schema": {"type": "string"}}},
                        },
                        **auth_errors,
                        "404": answer("No such blast.", error),
                    },
                }
            },
            **action_paths,
            "/api/replies": {
                "get": {
                    "summary": "Inbound SMS, newest first (contract §12).",
                    "operationId": "listReplies",
                    "parameters": [
                        {"name": "needs_review", "in": "query", "schema": {"type": "boolean"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {
                                "type": "integer",
                                "minimum": 1,
                                "maximum": MAX_REPLIES_LIMIT,
                            },
                        },
                    ],
                    "responses": {
                        "200": answer("Replies.", {"type": "array", "items": reply}),
                        **auth_errors,
                        "422": answer("Bad needs_review or limit.", error),
                    },
                }
            },
            "/api/replies/{reply_id}/review": {
                "post": {
                    "summary": "Mark a reply reviewed; not_opt_out lifts what it suppressed.",
                    "operationId": "reviewReply",
                    "parameters": [
                        {
                            "name": "reply_id",
                            "in": "path",
                            "required": True,
                            "schema": {"type": "integer"},
                        }
                    ],
                    "requestBody": {
                        "required": True,
                        "content": {
                            "application/json": {
                                "schema": {
                                    "type": "object",
                                    "required": ["verdict"],
                                    "properties": {"verdict": {"enum": list(VERDICTS)}},
                                }
                            }
                        },
                    },
                    "responses": {
                        "200": answer("The reviewed reply.", reply),
                        **auth_errors,
                        "404": answer("No such reply.", error),
                        "413": answer("Body too large."),
                        "422": answer("Bad verdict.", error),
                    },
                }
            },
            "/api/audit": {
                "get": {
                    "summary": "The audit log, newest first.",
                    "operationId": "listAudit",
                    "parameters": [
                        {"name": "since", "in": "query", "schema": {"type": "string"}},
                        {
                            "name": "limit",
                            "in": "query",
                            "schema": {"type": "integer", "minimum": 1, "maximum": MAX_AUDIT_LIMIT},
                        },
                    ],
                    "responses": {
                        "200": answer(
                            "Entries.",
                            {"type": "array", "items": {"$ref": "#/components/schemas/AuditEntry"}},
                        ),
                        **auth_errors,
                        "422": answer("Bad since or limit.", error),
                    },
                }
            },
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Reply": {
                    "type": "object",
                    "required": ["id", "received_at", "from", "body", "kind", "needs_review"],
                    "properties": {
                        "id": {"type": "integer"},
                        "received_at": {"type": "string", "format": "date-time"},
                        "from": {"type": "string"},
                        "to": {"type": ["string", "null"]},
                        "body": {"type": "string"},
                        "kind": {"enum": ["opt_out", "opt_in", "help", "needs_review", "other"]},
                        "reason": {"type": "string"},
                        "needs_review": {"type": "boolean"},
                        "supporter_id": {"type": ["integer", "null"]},
                        "blast_id": {"type": ["string", "null"]},
                        "review": {
                            "type": ["object", "null"],
                            "properties": {
                                "verdict": {"enum": list(VERDICTS)},
                                "by": {"type": "string"},
                                "at": {"type": "string", "format": "date-time"},
                            },
                        },
                    },
                },
                "Error": {
                    "type": "object",
                    "required": ["error"],
                    "properties": {"error": {"type": "string"}},
                },
                "Alert": {
                    "type": "object",
                    "required": ["topic"],
                    "properties": {
                        "topic": {"type": "string", "pattern": "^[a-z0-9-]{1,64}$"},
                        "alert_id": {"type": "string", "pattern": "^[A-Za-z0-9._:-]{1,128}$"},
                        "priority": {"enum": ["urgent", "normal", "bulk"]},
                        "sms": {
                            "type": "object",
                            "required": ["body"],
                            "properties": {"body": {"type": "string"}},
                        },
                        "email": {
                            "type": "object",
                            "required": ["subject"],
                            "properties": {
                                "subject": {"type": "string"},
                                "text": {"type": "string"},
                                "html": {"type": "string"},
                            },
                        },
                        "audience": {
                            "type": "object",
                            "properties": {
                                "postal_codes": {"type": "array", "items": {"type": "string"}},
                                "states": {"type": "array", "items": {"type": "string"}},
                                "tags": {"type": "array", "items": {"type": "string"}},
                            },
                        },
                        "send_by": {"type": "string", "format": "date-time"},
                        "test_recipients": {"type": "array", "items": {"type": "string"}},
                        "dry_run": {"type": "boolean"},
                    },
                },
                "AuditEntry": {
                    "type": "object",
                    "required": ["id", "at", "actor", "source", "action"],
                    "properties": {
                        "id": {"type": "integer"},
                        "at": {"type": "string", "format": "date-time"},
                        "actor": {"type": "string"},
                        "source": {"enum": [s.value for s in Source]},
                        "action": {"type": "string"},
                        "blast_id": {"type": ["string", "null"]},
                        "value": {"type": ["string", "null"]},
                        "detail": {"type": ["string", "null"]},
                    },
                },
                "Blast": {
                    "type": "object",
                    "required": ["blast_id", "topic", "status", "created_at", "counts"],
                    "properties": {
                        "blast_id": {"type": "string"},
                        "topic": {"type": "string"},
                        "status": {"enum": list(BLAST_STATUSES)},
                        "created_at": {"type": "string", "format": "date-time"},
                        "counts": {"type": "object", "additionalProperties": counts},
                        "variants": {
                            "type": "object",
                            "description": "an A/B test's counts per variant ('0', '1', …) "
                            "and channel, from the ledger; only when the alert has variants",
                            "additionalProperties": {
                                "type": "object",
                                "additionalProperties": counts,
                            },
                        },
                        "counts_source": {
                            "enum": ["live", "ledger"],
                            "description": "live: Redis counters of a running blast, "
                            "reconciled with the ledger every scheduler pass; ledger: counted "
                            "from the ledger rows (ended blasts)",
                        },
                    },
                },
            },
        },
    }
