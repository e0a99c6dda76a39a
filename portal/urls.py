from django.contrib import admin
from django.contrib.auth import views as auth_views
from django.urls import include, path

from portal.views import pages

urlpatterns = [
    path("admin/", admin.site.urls),
    path("api/v1/", include("portal.api.urls")),
    path("login/", auth_views.LoginView.as_view(redirect_authenticated_user=True), name="login"),
    path("logout/", auth_views.LogoutView.as_view(), name="logout"),
    path("", pages.pipeline_list, name="pipeline_list"),
    path("pipelines/new/", pages.pipeline_new, name="pipeline_new"),
    path("pipelines/cron-preview/", pages.cron_preview, name="cron_preview"),
    path("pipelines/<slug:slug>/", pages.pipeline_detail, name="pipeline_detail"),
    path("pipelines/<slug:slug>/pause/", pages.pipeline_pause, name="pipeline_pause"),
    path("pipelines/<slug:slug>/trigger/", pages.pipeline_trigger, name="pipeline_trigger"),
    path("pipelines/<slug:slug>/backfill/", pages.pipeline_backfill, name="pipeline_backfill"),
    path("runs/<int:run_id>/", pages.run_detail, name="run_detail"),
    path("runs/<int:run_id>/rerun/", pages.run_rerun_view, name="run_rerun"),
    path("runs/<int:run_id>/cancel/", pages.run_cancel_view, name="run_cancel"),
]
