from django.urls import path

from portal.api import views

urlpatterns = [
    path("pipelines/", views.PipelineListCreateApi.as_view(), name="api_pipelines"),
    path("pipelines/<slug:slug>/", views.PipelineDetailApi.as_view(), name="api_pipeline"),
    path("pipelines/<slug:slug>/pause/", views.PipelinePauseApi.as_view(), name="api_pipeline_pause"),
    path("pipelines/<slug:slug>/unpause/", views.PipelineUnpauseApi.as_view(), name="api_pipeline_unpause"),
    path("pipelines/<slug:slug>/runs/", views.PipelineRunsApi.as_view(), name="api_pipeline_runs"),
    path("pipelines/<slug:slug>/backfills/", views.BackfillCreateApi.as_view(), name="api_backfills"),
    path("runs/<int:run_id>/", views.RunDetailApi.as_view(), name="api_run"),
    path("runs/<int:run_id>/rerun/", views.RunRerunApi.as_view(), name="api_run_rerun"),
    path("runs/<int:run_id>/cancel/", views.RunCancelApi.as_view(), name="api_run_cancel"),
]
