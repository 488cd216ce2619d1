-- migrate:up
CREATE TABLE users (
    id            bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    nickname      text        NOT NULL,
    password_hash text        NOT NULL,
    time_created  timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT users_nickname_len CHECK (char_length(nickname) BETWEEN 3 AND 50)
);
-- Nicknames are unique case-insensitively; lookups go through lower(nickname).
CREATE UNIQUE INDEX users_nickname_lower_key ON users (lower(nickname));

-- One row per issued refresh token. A login starts a family; every rotation
-- adds a row to the family and marks its parent as used. Presenting a token
-- whose successor has itself been used is reuse: the family is revoked.
CREATE TABLE refresh_tokens (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    token_hash   bytea       NOT NULL UNIQUE,
    family_id    uuid        NOT NULL,
    user_id      bigint      NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    parent_id    bigint      REFERENCES refresh_tokens (id) ON DELETE CASCADE,
    time_created timestamptz NOT NULL DEFAULT now(),
    expires_at   timestamptz NOT NULL,
    used_at      timestamptz,
    revoked_at   timestamptz
);
CREATE INDEX refresh_tokens_family_idx ON refresh_tokens (family_id);
CREATE INDEX refresh_tokens_parent_idx ON refresh_tokens (parent_id);

CREATE TABLE rooms (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    name         text        NOT NULL,
    time_created timestamptz NOT NULL DEFAULT now(),
    -- last_seq is the highest seq stored in the room; workers advance it under
    -- the row lock only for rows they actually insert, so seqs stay gapless.
    last_seq     bigint      NOT NULL DEFAULT 0 CHECK (last_seq >= 0)
);

CREATE TABLE messages (
    room_id       bigint      NOT NULL REFERENCES rooms (id) ON DELETE CASCADE,
    seq           bigint      NOT NULL CHECK (seq > 0),
    id            uuid        NOT NULL,
    user_id       bigint      NOT NULL REFERENCES users (id),
    nickname      text        NOT NULL,
    content       text        NOT NULL,
    client_msg_id text,
    time_created  timestamptz NOT NULL,
    time_stored   timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (room_id, seq),
    CONSTRAINT messages_id_key UNIQUE (id)
);
CREATE UNIQUE INDEX messages_client_msg_id_key
    ON messages (room_id, user_id, client_msg_id) WHERE client_msg_id IS NOT NULL;

-- Records that could not be stored after the configured number of tries.
CREATE TABLE dead_letters (
    id           bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    topic        text        NOT NULL,
    kafka_partition integer  NOT NULL,
    kafka_offset bigint      NOT NULL,
    record_key   bytea,
    payload      bytea       NOT NULL,
    error        text        NOT NULL,
    attempts     integer     NOT NULL,
    time_created timestamptz NOT NULL DEFAULT now(),
    CONSTRAINT dead_letters_position_key UNIQUE (topic, kafka_partition, kafka_offset)
);

-- migrate:down
DROP TABLE dead_letters;
DROP TABLE messages;
DROP TABLE rooms;
DROP TABLE refresh_tokens;
DROP TABLE users;
