-- The agent service's schema (DESIGN.md §5 "agent"). Every row is scoped to
-- one VoiceAgent by (namespace, voice_agent), so agents can share a database.
-- Times are Unix epoch milliseconds.

-- One runtime session (one phone call) that the agent has answered turns of.
CREATE TABLE sessions (
    namespace     text   NOT NULL,
    voice_agent   text   NOT NULL,
    id            text   NOT NULL,
    created_at_ms bigint NOT NULL,
    updated_at_ms bigint NOT NULL,
    PRIMARY KEY (namespace, voice_agent, id)
);

-- The conversation: the caller's utterance and the agent's reply, in order.
CREATE TABLE turns (
    id            bigserial PRIMARY KEY,
    namespace     text   NOT NULL,
    voice_agent   text   NOT NULL,
    session_id    text   NOT NULL,
    role          text   NOT NULL CHECK (role IN ('caller', 'agent')),
    text          text   NOT NULL,
    -- AgentLatency of an agent turn ({retrievalMs, llmTtftMs, llmTotalMs, totalMs}).
    latency       jsonb,
    -- Citations of an agent turn ([{documentId, chunkId, title, score, snippet}]).
    citations     jsonb  NOT NULL DEFAULT '[]'::jsonb,
    created_at_ms bigint NOT NULL,
    FOREIGN KEY (namespace, voice_agent, session_id)
        REFERENCES sessions (namespace, voice_agent, id) ON DELETE CASCADE
);
CREATE INDEX turns_by_session ON turns (namespace, voice_agent, session_id, id);

-- Knowledge documents as ingested.
CREATE TABLE documents (
    namespace     text   NOT NULL,
    voice_agent   text   NOT NULL,
    id            text   NOT NULL,
    title         text   NOT NULL,
    format        text   NOT NULL CHECK (format IN ('text', 'markdown')),
    content       text   NOT NULL,
    bytes         bigint NOT NULL,
    chunk_count   integer NOT NULL,
    created_at_ms bigint NOT NULL,
    PRIMARY KEY (namespace, voice_agent, id)
);

-- The chunks of a document with their embedding; the embedded vector index is
-- rebuilt from these rows at start.
CREATE TABLE chunks (
    namespace     text    NOT NULL,
    voice_agent   text    NOT NULL,
    document_id   text    NOT NULL,
    id            text    NOT NULL,
    seq           integer NOT NULL,
    title         text    NOT NULL,
    section       text    NOT NULL,
    text          text    NOT NULL,
    embedding     real[]  NOT NULL,
    PRIMARY KEY (namespace, voice_agent, id),
    FOREIGN KEY (namespace, voice_agent, document_id)
        REFERENCES documents (namespace, voice_agent, id) ON DELETE CASCADE
);
CREATE INDEX chunks_by_document ON chunks (namespace, voice_agent, document_id, seq);

-- One finished phone call, for reporting beyond the Call CR's retention.
CREATE TABLE call_records (
    namespace        text   NOT NULL,
    voice_agent      text   NOT NULL,
    call_sid         text   NOT NULL,
    session_id       text,
    from_number      text,
    to_number        text,
    started_at_ms    bigint NOT NULL,
    ended_at_ms      bigint,
    turns            integer NOT NULL DEFAULT 0,
    end_reason       text,
    summary          jsonb  NOT NULL DEFAULT '{}'::jsonb,
    PRIMARY KEY (namespace, voice_agent, call_sid)
);
