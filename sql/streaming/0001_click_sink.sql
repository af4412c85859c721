-- The click-stream sink: per-minute aggregates, the exact distinct sets behind them,
-- funnel counts, dead letters, late events, and the stream's progress (one row per
-- streaming query) with a log of committed micro-batches.
--
-- Applied by spotlake.sink_schema inside one transaction with search_path set to the
-- sink's schema, so names here are unqualified. Never edit an applied migration: add
-- the next numbered file instead.

-- Where each streaming query stands. A micro-batch commits in the same transaction
-- that moves last_batch_id, so a replayed batch id (<= last_batch_id) changes nothing.
-- run_id fences a stale run: only the run that claimed the query last may commit.
CREATE TABLE stream_progress (
    query_name     text PRIMARY KEY,
    run_id         text NOT NULL,
    last_batch_id  bigint NOT NULL DEFAULT -1,
    max_event_time timestamptz,
    watermark      timestamptz,
    offsets        jsonb NOT NULL DEFAULT '{}'::jsonb,
    claimed_at     timestamptz NOT NULL DEFAULT now(),
    committed_at   timestamptz
);

-- One row per committed micro-batch: what it read, where it left the offsets, when
-- its results became visible.
CREATE TABLE stream_batches (
    query_name     text NOT NULL,
    batch_id       bigint NOT NULL,
    run_id         text NOT NULL,
    input_rows     bigint NOT NULL,
    valid_events   bigint NOT NULL,
    counted_events bigint NOT NULL,
    late_events    bigint NOT NULL,
    dead_letters   bigint NOT NULL,
    watermark      timestamptz,
    offsets        jsonb NOT NULL,
    started_at     timestamptz NOT NULL,
    committed_at   timestamptz NOT NULL,
    PRIMARY KEY (query_name, batch_id)
);

-- Per event-time window (window_start, one minute by default), page and event type.
-- users and sessions are exact distinct counts, kept equal to the size of the sets in
-- click_window_users / click_window_sessions.
CREATE TABLE click_aggregates (
    window_start  timestamptz NOT NULL,
    page          text NOT NULL,
    event_type    text NOT NULL,
    events        bigint NOT NULL,
    users         bigint NOT NULL,
    sessions      bigint NOT NULL,
    late_events   bigint NOT NULL DEFAULT 0,
    last_batch_id bigint NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (window_start, page, event_type)
);
-- The primary key serves "a time range, optionally one page" (window_start, page);
-- this one serves "one page over time".
CREATE INDEX click_aggregates_page_window ON click_aggregates (page, window_start);

CREATE TABLE click_window_users (
    window_start timestamptz NOT NULL,
    page         text NOT NULL,
    event_type   text NOT NULL,
    user_id      text NOT NULL,
    PRIMARY KEY (window_start, page, event_type, user_id)
);

CREATE TABLE click_window_sessions (
    window_start timestamptz NOT NULL,
    page         text NOT NULL,
    event_type   text NOT NULL,
    session_id   text NOT NULL,
    PRIMARY KEY (window_start, page, event_type, session_id)
);

-- Funnel per window: events and distinct sessions reaching each stage
-- (session_start, product_view, add_to_cart, checkout, purchase).
CREATE TABLE click_funnel (
    window_start  timestamptz NOT NULL,
    stage         text NOT NULL,
    events        bigint NOT NULL,
    sessions      bigint NOT NULL,
    last_batch_id bigint NOT NULL,
    updated_at    timestamptz NOT NULL,
    PRIMARY KEY (window_start, stage)
);

CREATE TABLE click_funnel_sessions (
    window_start timestamptz NOT NULL,
    stage        text NOT NULL,
    session_id   text NOT NULL,
    PRIMARY KEY (window_start, stage, session_id)
);

-- Records that are not valid events of schema version 1, with the raw bytes and where
-- they came from. Keyed by their Kafka coordinates, so a replay cannot duplicate one.
CREATE TABLE click_dead_letters (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    kafka_timestamp timestamptz,
    key             bytea,
    value           bytea,
    reason          text NOT NULL CHECK (reason IN ('bad_json', 'missing_field', 'wrong_type',
                                                    'unknown_schema_version')),
    detail          text NOT NULL,
    batch_id        bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
CREATE INDEX click_dead_letters_reason ON click_dead_letters (reason, recorded_at);

-- Valid events whose event time was behind the stream's watermark when they arrived.
-- counted says whether the late-event policy still added them to their window.
CREATE TABLE click_late_events (
    topic           text NOT NULL,
    kafka_partition integer NOT NULL,
    kafka_offset    bigint NOT NULL,
    kafka_timestamp timestamptz,
    event_id        text NOT NULL,
    event_time      timestamptz NOT NULL,
    window_start    timestamptz NOT NULL,
    page            text NOT NULL,
    event_type      text NOT NULL,
    user_id         text NOT NULL,
    session_id      text NOT NULL,
    watermark       timestamptz NOT NULL,
    lateness_ms     bigint NOT NULL,
    counted         boolean NOT NULL,
    batch_id        bigint NOT NULL,
    recorded_at     timestamptz NOT NULL DEFAULT clock_timestamp(),
    PRIMARY KEY (topic, kafka_partition, kafka_offset)
);
CREATE INDEX click_late_events_window ON click_late_events (window_start);
