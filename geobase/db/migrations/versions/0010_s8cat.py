"""The open catalog: data grades and openness overrides, admin metadata of catalog records,
outside requesters and their requests for conditional data.

Revision ID: 0010_s8cat
Revises: 0010_s8ind

``catalog.layers.grade`` / ``openness``: an admin's override of the spec's data grade
(一般/重要/核心) and openness class (无条件开放/有条件开放/不予开放); NULL means "the spec's"
(read as ``coalesce(grade, spec->>'grade')``). Unknown values are refused here and, were one to
slip through, refused again by :mod:`geobase.security` (fail closed).
``catalog.record_meta``: the admin-editable part of each catalog record (titles, abstracts, the
4x4 classification, themes, tags, ...) as one JSON document per dataset
(:mod:`geobase.catalog.records`).
``catalog.requesters`` / ``catalog.access_requests``: the request-and-approve path
(:mod:`geobase.catalog.requests`); ``key_token`` holds an approved request's key until its
requester has read it once. ``catalog.api_keys.scope``: what an approved request's key is limited
to (datasets, formats, bbox).
"""

from alembic import op

revision = "0010_s8cat"
down_revision = "0010_s8ind"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute(
        """
        ALTER TABLE catalog.layers ADD COLUMN grade text
            CHECK (grade IS NULL OR grade IN ('general', 'important', 'core'));
        ALTER TABLE catalog.layers ADD COLUMN openness text
            CHECK (openness IS NULL OR openness IN ('open', 'conditional', 'closed'));

        CREATE TABLE catalog.record_meta (
            dataset     text PRIMARY KEY,
            meta        jsonb NOT NULL DEFAULT '{}'::jsonb,
            updated_at  timestamptz NOT NULL DEFAULT now(),
            updated_by  text
        );

        CREATE TABLE catalog.requesters (
            id            uuid PRIMARY KEY,
            name          text NOT NULL,
            organisation  text NOT NULL,
            contact       text NOT NULL,
            token_hash    text NOT NULL UNIQUE,
            created_at    timestamptz NOT NULL DEFAULT now()
        );

        CREATE TABLE catalog.access_requests (
            id            uuid PRIMARY KEY,
            requester     uuid NOT NULL REFERENCES catalog.requesters (id),
            datasets      text[] NOT NULL,
            formats       text[] NOT NULL DEFAULT '{}',
            bbox          double precision[],
            purpose       text NOT NULL,
            days          integer NOT NULL CHECK (days BETWEEN 1 AND 366),
            status        text NOT NULL DEFAULT 'pending'
                          CHECK (status IN ('pending', 'approved', 'refused')),
            department    text NOT NULL,
            decided_by    text,
            decided_at    timestamptz,
            reason        text,
            key_id        text,
            key_token     text,
            created_at    timestamptz NOT NULL DEFAULT now()
        );
        -- an approved request's key: limited to datasets (and formats, box), see geobase.keys
        ALTER TABLE catalog.api_keys ADD COLUMN scope jsonb;
        CREATE INDEX access_requests_department ON catalog.access_requests (department, status);
        """
    )


def downgrade() -> None:
    op.execute(
        """
        ALTER TABLE catalog.api_keys DROP COLUMN scope;
        DROP TABLE catalog.access_requests;
        DROP TABLE catalog.requesters;
        DROP TABLE catalog.record_meta;
        ALTER TABLE catalog.layers DROP COLUMN openness;
        ALTER TABLE catalog.layers DROP COLUMN grade;
        """
    )
