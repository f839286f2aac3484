"""The settings page where a person makes, lists and revokes their API keys."""

from datetime import UTC, datetime, time

from django import forms
from django.contrib.auth.decorators import login_required
from django.shortcuts import get_object_or_404, redirect, render
from django.utils import timezone
from django.views.decorators.http import require_POST

from chat.api import admission, keys
from chat.models import ApiKey
from providers.models import Model

MAX_KEYS = 50  # per person


class NewKeyForm(forms.Form):
    name = forms.CharField(max_length=100, help_text="What it is for, to recognise it later.")
    expires = forms.DateField(
        required=False,
        help_text="Optional. The key stops working at the start of this day (UTC).",
        widget=forms.DateInput(attrs={"type": "date"}),
    )
    allowed_models = forms.ModelMultipleChoiceField(
        queryset=Model.objects.none(),
        required=False,
        widget=forms.CheckboxSelectMultiple,
        label="Only these models",
        help_text="None ticked: every model you may use.",
    )

    def __init__(self, *args, user, **kwargs):
        super().__init__(*args, **kwargs)
        self.user = user
        available = Model.objects.available_to(user).select_related("provider")
        self.fields["allowed_models"].queryset = available
        self.fields["allowed_models"].label_from_instance = admission.api_id

    def clean_expires(self):
        day = self.cleaned_data["expires"]
        if day is None:
            return None
        moment = datetime.combine(day, time.min, tzinfo=UTC)
        if moment <= timezone.now():
            raise forms.ValidationError("Pick a day after today.")
        return moment

    def clean(self):
        if ApiKey.objects.filter(user=self.user, revoked__isnull=True).count() >= MAX_KEYS:
            raise forms.ValidationError(f"You have {MAX_KEYS} keys; revoke one first.")
        return super().clean()


def _page(request, form, new_key=None, status=200):
    context = {
        "allowed": keys.may_use_api(request.user),
        "form": form,
        "new_key": new_key,
        "api_keys": ApiKey.objects.filter(user=request.user)
        .prefetch_related("allowed_models__provider")
        .order_by("-created"),
        "base_url": request.build_absolute_uri("/v1"),
    }
    return render(request, "chat/api_keys.html", context, status=status)


@login_required
def api_keys(request):
    if request.method != "POST":
        return _page(request, NewKeyForm(user=request.user))
    if not keys.may_use_api(request.user):
        return _page(request, NewKeyForm(user=request.user), status=403)
    form = NewKeyForm(request.POST, user=request.user)
    if not form.is_valid():
        return _page(request, form, status=400)
    data = form.cleaned_data
    _, key = keys.create(request.user, data["name"], data["expires"], data["allowed_models"])
    return _page(request, NewKeyForm(user=request.user), new_key=key)


@login_required
@require_POST
def revoke(request, key_id):
    row = get_object_or_404(ApiKey, pk=key_id, user=request.user)
    keys.revoke(request.user, row)
    return redirect("api_keys")
