"""Usage views: the admin dashboard (totals, charts, CSV) and each user's own page."""

import csv
from datetime import timedelta

from django import forms
from django.contrib.admin.views.decorators import staff_member_required
from django.contrib.auth.decorators import login_required
from django.db.models import Count, F, Sum
from django.db.models.functions import TruncDate
from django.http import HttpResponse
from django.shortcuts import render
from django.utils import timezone

from chat.governance import charts, quotas
from chat.models import UsageRecord


class RangeForm(forms.Form):
    start = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))
    end = forms.DateField(widget=forms.DateInput(attrs={"type": "date"}))

    def clean(self):
        cleaned = super().clean()
        if cleaned.get("start") and cleaned.get("end") and cleaned["start"] > cleaned["end"]:
            raise forms.ValidationError("The start must not be after the end.")
        return cleaned


def _range(request):
    today = timezone.now().date()
    form = RangeForm(request.GET or {"start": today - timedelta(days=29), "end": today})
    if form.is_valid():
        return form, form.cleaned_data["start"], form.cleaned_data["end"]
    return form, today - timedelta(days=29), today


def _totals(records):
    return records.aggregate(
        replies=Count("id"),
        prompt=Sum("prompt_tokens"),
        completion=Sum("completion_tokens"),
        tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
        cost=Sum("cost"),
    )


def _per_day(records):
    return list(
        records.annotate(day=TruncDate("created"))
        .values("day")
        .annotate(
            tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
            cost=Sum("cost"),
            replies=Count("id"),
        )
        .order_by("day")
    )


def _charts(records, start, end) -> dict:
    per_day = _per_day(records)
    return {
        "token_chart": charts.daily(per_day, start, end, "tokens", "tokens"),
        "cost_chart": charts.daily(per_day, start, end, "cost", "USD"),
    }


@staff_member_required
def dashboard(request):
    form, start, end = _range(request)
    records = UsageRecord.objects.filter(created__date__gte=start, created__date__lte=end)
    if request.GET.get("format") == "csv":
        return _csv(records, start, end)
    grouped = {
        "by_model": records.values("model_name", "provider_name"),
        "by_user": records.values("user__username"),
    }
    tables = {
        name: list(
            rows.annotate(
                replies=Count("id"),
                tokens=Sum(F("prompt_tokens") + F("completion_tokens")),
                cost=Sum("cost"),
            ).order_by("-cost", "-tokens")[:50]
        )
        for name, rows in grouped.items()
    }
    context = {
        "title": "Usage and cost",
        "form": form,
        "start": start,
        "end": end,
        "totals": _totals(records),
        **_charts(records, start, end),
        **tables,
    }
    return render(request, "admin/usage.html", context)


def _csv(records, start, end):
    response = HttpResponse(content_type="text/csv")
    response["Content-Disposition"] = f'attachment; filename="usage-{start}-{end}.csv"'
    writer = csv.writer(response)
    writer.writerow(
        [
            "day",
            "user",
            "provider",
            "model",
            "replies",
            "prompt_tokens",
            "completion_tokens",
            "cost_usd",
        ]
    )
    rows = (
        records.annotate(day=TruncDate("created"))
        .values("day", "user__username", "provider_name", "model_name")
        .annotate(
            replies=Count("id"),
            prompt=Sum("prompt_tokens"),
            completion=Sum("completion_tokens"),
            cost=Sum("cost"),
        )
        .order_by("day", "user__username", "model_name")
    )
    for row in rows:
        writer.writerow(
            [row["day"], row["user__username"], row["provider_name"], row["model_name"],
             row["replies"], row["prompt"], row["completion"], row["cost"]]
        )  # fmt: skip
    return response


@login_required
def my_usage(request):
    now = timezone.now()
    records = UsageRecord.objects.filter(user=request.user)
    limits = quotas.limits_for(request.user)
    used = quotas.usage_of(request.user, now)
    context = {
        "today": _totals(records.filter(created__gte=quotas.day_start(now))),
        "month": _totals(records.filter(created__gte=quotas.month_start(now))),
        "limits": limits,
        "used": used,
        "tokens_left": None
        if limits.tokens_per_day is None
        else max(limits.tokens_per_day - used.tokens_today, 0),
        "cost_left": None
        if limits.cost_per_month is None
        else max(limits.cost_per_month - used.cost_this_month, 0),
        "recent": records.order_by("-created")[:50],
        "start": (now - timedelta(days=29)).date(),
        "end": now.date(),
        **_charts(
            records.filter(created__gte=now - timedelta(days=30)),
            (now - timedelta(days=29)).date(),
            now.date(),
        ),
    }
    return render(request, "chat/my_usage.html", context)
