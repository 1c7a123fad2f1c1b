"""Initial schema: every entity of DESIGN.md.

Revision ID: 1df08b06f01f
Revises: 
Create Date: 2026-11-24 00:21:58.117443+00:00
"""

from __future__ import annotations

import sqlalchemy as sa
from advanced_alchemy.types import GUID, DateTimeUTC, JsonB
from alembic import op

# Autogenerate renders advanced-alchemy types with the `sa.` prefix.
sa.GUID = GUID  # type: ignore[attr-defined]
sa.DateTimeUTC = DateTimeUTC  # type: ignore[attr-defined]
sa.JsonB = JsonB  # type: ignore[attr-defined]

revision = '1df08b06f01f'
down_revision = None
branch_labels = None
depends_on = None


def upgrade() -> None:
    schema_upgrades()
    data_upgrades()


def downgrade() -> None:
    data_downgrades()
    schema_downgrades()


def schema_upgrades() -> None:
    op.create_table('api_token',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('name', sa.String(length=100), nullable=False),
    sa.Column('token_hash', sa.String(length=64), nullable=False),
    sa.Column('role', sa.String(length=16), nullable=False),
    sa.Column('project_ids', JsonB, nullable=True),
    sa.Column('revoked', sa.Boolean(), nullable=False),
    sa.Column('last_used_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("role IN ('viewer', 'product_owner', 'admin')", name=op.f('ck_api_token_role_allowed')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_api_token')),
    sa.UniqueConstraint('name', name=op.f('uq_api_token_name')),
    sa.UniqueConstraint('token_hash', name=op.f('uq_api_token_token_hash'))
    )
    op.create_table('event',
    sa.Column('id', sa.BigInteger().with_variant(sa.Integer(), 'sqlite'), sa.Identity(always=False, start=1, increment=1), nullable=False),
    sa.Column('event_type', sa.String(length=64), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=True),
    sa.Column('task_id', sa.GUID(length=16), nullable=True),
    sa.Column('actor', sa.String(length=100), nullable=True),
    sa.Column('data', JsonB, nullable=False),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_event'))
    )
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.create_index('ix_event_created_at', ['created_at'], unique=False)
        batch_op.create_index('ix_event_event_type', ['event_type'], unique=False)
        batch_op.create_index('ix_event_project_id_id', ['project_id', 'id'], unique=False)
        batch_op.create_index('ix_event_task_id', ['task_id'], unique=False)

    op.create_table('project',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('name', sa.String(length=200), nullable=False),
    sa.Column('description', sa.Text(), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('oversight_level', sa.String(length=8), nullable=False),
    sa.Column('budget_tokens', sa.BigInteger(), nullable=True),
    sa.Column('budget_cost_usd', sa.Float(), nullable=True),
    sa.Column('settings', JsonB, nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("oversight_level IN ('high', 'medium', 'low')", name=op.f('ck_project_oversight_level_allowed')),
    sa.CheckConstraint("status IN ('active', 'paused', 'completed', 'failed', 'cancelled')", name=op.f('ck_project_status_allowed')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_project'))
    )
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.create_index('ix_project_status', ['status'], unique=False)

    op.create_table('workflow_execution',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=False),
    sa.Column('workflow_id', sa.String(length=200), nullable=False),
    sa.Column('definition', JsonB, nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('current_step', sa.String(length=200), nullable=True),
    sa.Column('step_state', JsonB, nullable=False),
    sa.Column('variables', JsonB, nullable=False),
    sa.Column('inputs', JsonB, nullable=False),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('finished_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('running', 'waiting_for_hitl', 'paused', 'completed', 'failed', 'cancelled')", name=op.f('ck_workflow_execution_status_allowed')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_workflow_execution_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_workflow_execution'))
    )
    with op.batch_alter_table('workflow_execution', schema=None) as batch_op:
        batch_op.create_index('ix_workflow_execution_project_id', ['project_id'], unique=False)
        batch_op.create_index('ix_workflow_execution_status', ['status'], unique=False)

    op.create_table('agent_task',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=False),
    sa.Column('agent_type', sa.String(length=16), nullable=False),
    sa.Column('instructions', sa.Text(), nullable=False),
    sa.Column('context_ids', JsonB, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('attempts', sa.Integer(), nullable=False),
    sa.Column('output', JsonB, nullable=True),
    sa.Column('error', sa.Text(), nullable=True),
    sa.Column('job_id', sa.String(length=64), nullable=True),
    sa.Column('timeout_seconds', sa.Integer(), nullable=False),
    sa.Column('lease_token', sa.String(length=36), nullable=True),
    sa.Column('lease_expires_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('heartbeat_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('queued_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('started_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('finished_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('workflow_execution_id', sa.GUID(length=16), nullable=True),
    sa.Column('step_id', sa.String(length=200), nullable=True),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("agent_type IN ('orchestrator', 'analyst', 'architect', 'coder', 'tester', 'deployer')", name=op.f('ck_agent_task_agent_type_allowed')),
    sa.CheckConstraint("status IN ('pending', 'queued', 'working', 'waiting_for_hitl', 'completed', 'failed', 'cancelled')", name=op.f('ck_agent_task_status_allowed')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_agent_task_project_id_project'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workflow_execution_id'], ['workflow_execution.id'], name=op.f('fk_agent_task_workflow_execution_id_workflow_execution'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_task'))
    )
    with op.batch_alter_table('agent_task', schema=None) as batch_op:
        batch_op.create_index('ix_agent_task_project_id_created_at', ['project_id', 'created_at'], unique=False)
        batch_op.create_index('ix_agent_task_status_lease_expires_at', ['status', 'lease_expires_at'], unique=False)
        batch_op.create_index('ix_agent_task_workflow_execution_id', ['workflow_execution_id'], unique=False)

    op.create_table('handoff',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=False),
    sa.Column('workflow_execution_id', sa.GUID(length=16), nullable=True),
    sa.Column('from_agent', sa.String(length=32), nullable=False),
    sa.Column('to_agent', sa.String(length=32), nullable=False),
    sa.Column('phase', sa.String(length=16), nullable=False),
    sa.Column('instructions', sa.Text(), nullable=False),
    sa.Column('context_ids', JsonB, nullable=False),
    sa.Column('expected_outputs', JsonB, nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('pending', 'accepted', 'completed', 'cancelled')", name=op.f('ck_handoff_status_allowed')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_handoff_project_id_project'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['workflow_execution_id'], ['workflow_execution.id'], name=op.f('fk_handoff_workflow_execution_id_workflow_execution'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_handoff'))
    )
    with op.batch_alter_table('handoff', schema=None) as batch_op:
        batch_op.create_index('ix_handoff_project_id', ['project_id'], unique=False)
        batch_op.create_index('ix_handoff_workflow_execution_id', ['workflow_execution_id'], unique=False)

    op.create_table('agent_status',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=False),
    sa.Column('agent_type', sa.String(length=16), nullable=False),
    sa.Column('status', sa.String(length=20), nullable=False),
    sa.Column('current_task_id', sa.GUID(length=16), nullable=True),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("status IN ('idle', 'working', 'waiting_for_hitl', 'error')", name=op.f('ck_agent_status_status_allowed')),
    sa.ForeignKeyConstraint(['current_task_id'], ['agent_task.id'], name=op.f('fk_agent_status_current_task_id_agent_task'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_agent_status_project_id_project'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_agent_status')),
    sa.UniqueConstraint('project_id', 'agent_type', name='uq_agent_status_project_id_agent_type')
    )
    op.create_table('artifact',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=False),
    sa.Column('task_id', sa.GUID(length=16), nullable=True),
    sa.Column('parent_id', sa.GUID(length=16), nullable=True),
    sa.Column('source_agent', sa.String(length=32), nullable=True),
    sa.Column('artifact_type', sa.String(length=32), nullable=False),
    sa.Column('granularity', sa.String(length=16), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('content', JsonB, nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('metadata', JsonB, nullable=False),
    sa.Column('stale', sa.Boolean(), nullable=False),
    sa.Column('stale_reason', sa.Text(), nullable=True),
    sa.Column('deleted_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("artifact_type IN ('user_input', 'project_plan', 'software_specification', 'system_architecture', 'implementation_plan', 'source_code', 'test_results', 'deployment_log', 'deployment_package', 'agent_output', 'hitl_response')", name=op.f('ck_artifact_artifact_type_allowed')),
    sa.CheckConstraint("granularity IN ('document', 'section', 'concept')", name=op.f('ck_artifact_granularity_allowed')),
    sa.ForeignKeyConstraint(['parent_id'], ['artifact.id'], name=op.f('fk_artifact_parent_id_artifact'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_artifact_project_id_project'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['agent_task.id'], name=op.f('fk_artifact_task_id_agent_task'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifact'))
    )
    with op.batch_alter_table('artifact', schema=None) as batch_op:
        batch_op.create_index('ix_artifact_parent_id', ['parent_id'], unique=False)
        batch_op.create_index('ix_artifact_project_id_artifact_type', ['project_id', 'artifact_type'], unique=False)
        batch_op.create_index('ix_artifact_project_id_created_at', ['project_id', 'created_at'], unique=False)

    op.create_table('hitl_request',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=False),
    sa.Column('task_id', sa.GUID(length=16), nullable=True),
    sa.Column('workflow_execution_id', sa.GUID(length=16), nullable=True),
    sa.Column('step_id', sa.String(length=200), nullable=True),
    sa.Column('kind', sa.String(length=16), nullable=False),
    sa.Column('question', sa.Text(), nullable=False),
    sa.Column('options', JsonB, nullable=False),
    sa.Column('artifact_ids', JsonB, nullable=False),
    sa.Column('urgency', sa.String(length=8), nullable=False),
    sa.Column('assigned_role', sa.String(length=32), nullable=False),
    sa.Column('status', sa.String(length=16), nullable=False),
    sa.Column('user_response', JsonB, nullable=True),
    sa.Column('response_comment', sa.Text(), nullable=True),
    sa.Column('amended_content', JsonB, nullable=True),
    sa.Column('responder', sa.String(length=100), nullable=True),
    sa.Column('expiry_action', sa.String(length=16), nullable=False),
    sa.Column('expires_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('responded_at', sa.DateTimeUTC(timezone=True), nullable=True),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.CheckConstraint("kind IN ('phase_approval', 'low_confidence', 'conflict', 'task_failure', 'budget', 'pre_call', 'manual')", name=op.f('ck_hitl_request_kind_allowed')),
    sa.CheckConstraint("status IN ('pending', 'approved', 'rejected', 'amended', 'expired', 'cancelled')", name=op.f('ck_hitl_request_status_allowed')),
    sa.CheckConstraint("urgency IN ('low', 'medium', 'high', 'critical')", name=op.f('ck_hitl_request_urgency_allowed')),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_hitl_request_project_id_project'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['agent_task.id'], name=op.f('fk_hitl_request_task_id_agent_task'), ondelete='SET NULL'),
    sa.ForeignKeyConstraint(['workflow_execution_id'], ['workflow_execution.id'], name=op.f('fk_hitl_request_workflow_execution_id_workflow_execution'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hitl_request'))
    )
    with op.batch_alter_table('hitl_request', schema=None) as batch_op:
        batch_op.create_index('ix_hitl_request_project_id_status', ['project_id', 'status'], unique=False)
        batch_op.create_index('ix_hitl_request_status_expires_at', ['status', 'expires_at'], unique=False)

    op.create_table('llm_usage',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('project_id', sa.GUID(length=16), nullable=False),
    sa.Column('task_id', sa.GUID(length=16), nullable=True),
    sa.Column('agent_type', sa.String(length=16), nullable=False),
    sa.Column('provider', sa.String(length=32), nullable=False),
    sa.Column('model', sa.String(length=100), nullable=False),
    sa.Column('tokens_in', sa.Integer(), nullable=False),
    sa.Column('tokens_out', sa.Integer(), nullable=False),
    sa.Column('cost_usd', sa.Float(), nullable=False),
    sa.Column('latency_ms', sa.Float(), nullable=False),
    sa.Column('outcome', sa.String(length=32), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['project_id'], ['project.id'], name=op.f('fk_llm_usage_project_id_project'), ondelete='CASCADE'),
    sa.ForeignKeyConstraint(['task_id'], ['agent_task.id'], name=op.f('fk_llm_usage_task_id_agent_task'), ondelete='SET NULL'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_llm_usage'))
    )
    with op.batch_alter_table('llm_usage', schema=None) as batch_op:
        batch_op.create_index('ix_llm_usage_project_id_created_at', ['project_id', 'created_at'], unique=False)
        batch_op.create_index('ix_llm_usage_task_id', ['task_id'], unique=False)

    op.create_table('artifact_version',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('artifact_id', sa.GUID(length=16), nullable=False),
    sa.Column('version', sa.Integer(), nullable=False),
    sa.Column('title', sa.String(length=300), nullable=False),
    sa.Column('content', JsonB, nullable=False),
    sa.Column('change_note', sa.Text(), nullable=False),
    sa.Column('changed_by', sa.String(length=100), nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['artifact_id'], ['artifact.id'], name=op.f('fk_artifact_version_artifact_id_artifact'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_artifact_version')),
    sa.UniqueConstraint('artifact_id', 'version', name='uq_artifact_version_artifact_id_version')
    )
    op.create_table('hitl_history',
    sa.Column('id', sa.GUID(length=16), nullable=False),
    sa.Column('request_id', sa.GUID(length=16), nullable=False),
    sa.Column('action', sa.String(length=32), nullable=False),
    sa.Column('actor', sa.String(length=100), nullable=False),
    sa.Column('comment', sa.Text(), nullable=True),
    sa.Column('data', JsonB, nullable=False),
    sa.Column('sa_orm_sentinel', sa.Integer(), nullable=True),
    sa.Column('created_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.Column('updated_at', sa.DateTimeUTC(timezone=True), nullable=False),
    sa.ForeignKeyConstraint(['request_id'], ['hitl_request.id'], name=op.f('fk_hitl_history_request_id_hitl_request'), ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_hitl_history'))
    )
    with op.batch_alter_table('hitl_history', schema=None) as batch_op:
        batch_op.create_index('ix_hitl_history_request_id', ['request_id'], unique=False)



def schema_downgrades() -> None:
    with op.batch_alter_table('hitl_history', schema=None) as batch_op:
        batch_op.drop_index('ix_hitl_history_request_id')

    op.drop_table('hitl_history')
    op.drop_table('artifact_version')
    with op.batch_alter_table('llm_usage', schema=None) as batch_op:
        batch_op.drop_index('ix_llm_usage_task_id')
        batch_op.drop_index('ix_llm_usage_project_id_created_at')

    op.drop_table('llm_usage')
    with op.batch_alter_table('hitl_request', schema=None) as batch_op:
        batch_op.drop_index('ix_hitl_request_status_expires_at')
        batch_op.drop_index('ix_hitl_request_project_id_status')

    op.drop_table('hitl_request')
    with op.batch_alter_table('artifact', schema=None) as batch_op:
        batch_op.drop_index('ix_artifact_project_id_created_at')
        batch_op.drop_index('ix_artifact_project_id_artifact_type')
        batch_op.drop_index('ix_artifact_parent_id')

    op.drop_table('artifact')
    op.drop_table('agent_status')
    with op.batch_alter_table('handoff', schema=None) as batch_op:
        batch_op.drop_index('ix_handoff_workflow_execution_id')
        batch_op.drop_index('ix_handoff_project_id')

    op.drop_table('handoff')
    with op.batch_alter_table('agent_task', schema=None) as batch_op:
        batch_op.drop_index('ix_agent_task_workflow_execution_id')
        batch_op.drop_index('ix_agent_task_status_lease_expires_at')
        batch_op.drop_index('ix_agent_task_project_id_created_at')

    op.drop_table('agent_task')
    with op.batch_alter_table('workflow_execution', schema=None) as batch_op:
        batch_op.drop_index('ix_workflow_execution_status')
        batch_op.drop_index('ix_workflow_execution_project_id')

    op.drop_table('workflow_execution')
    with op.batch_alter_table('project', schema=None) as batch_op:
        batch_op.drop_index('ix_project_status')

    op.drop_table('project')
    with op.batch_alter_table('event', schema=None) as batch_op:
        batch_op.drop_index('ix_event_task_id')
        batch_op.drop_index('ix_event_project_id_id')
        batch_op.drop_index('ix_event_event_type')
        batch_op.drop_index('ix_event_created_at')

    op.drop_table('event')
    op.drop_table('api_token')


def data_upgrades() -> None:
    pass


def data_downgrades() -> None:
    pass
