"""Sign up, log in and the pending-approval page.

The signup policy (settings.SIGNUP_POLICY) decides whether a new account is
active at once, waits for an admin, or cannot be created at all. The first
account on an empty site always gets in and becomes the admin, so a newcomer
never needs a shell.
"""

from django.conf import settings
from django.contrib.auth import get_user_model, login
from django.contrib.auth.forms import AuthenticationForm, UserCreationForm
from django.contrib.auth.views import LoginView
from django.core.exceptions import ValidationError
from django.db import transaction
from django.shortcuts import redirect, render
from django.views.decorators.http import require_http_methods

from chat.accounts import throttle

PENDING_MESSAGE = "Your account is waiting for an administrator's approval."


class SignupForm(UserCreationForm):
    class Meta(UserCreationForm.Meta):
        model = get_user_model()
        fields = ("username",)


class LoginForm(AuthenticationForm):
    """Says "waiting for approval" instead of "wrong password" to pending accounts."""

    def clean(self):
        username = self.cleaned_data.get("username") or ""
        address = throttle.client_address(self.request) if self.request else ""
        wait = throttle.locked_for(username, address)
        if wait:
            minutes = max(1, round(wait / 60))
            raise ValidationError(
                f"Too many failed attempts. Try again in {minutes} minute{'s' * (minutes != 1)}.",
                code="throttled",
            )
        try:
            cleaned = super().clean()
        except ValidationError:
            if self._is_pending_account():
                raise ValidationError(PENDING_MESSAGE, code="inactive") from None
            throttle.record_failure(username, address)
            raise
        throttle.clear(username, address)
        return cleaned

    def _is_pending_account(self) -> bool:
        username = self.cleaned_data.get("username")
        password = self.cleaned_data.get("password")
        if not username or not password:
            return False
        user = get_user_model()._default_manager.filter(username=username).first()
        return user is not None and not user.is_active and user.check_password(password)


class ChatLoginView(LoginView):
    form_class = LoginForm
    redirect_authenticated_user = True


def signups_open() -> bool:
    return settings.SIGNUP_POLICY != "closed" or not get_user_model().objects.exists()


def create_account(form: SignupForm):
    """Save a new account; the first one on the site becomes the admin."""
    with transaction.atomic():
        user = form.save(commit=False)
        if not get_user_model().objects.exists():
            user.is_staff = user.is_superuser = user.is_active = True
        else:
            user.is_active = settings.SIGNUP_POLICY == "open"
        user.save()
    return user


@require_http_methods(["GET", "POST"])
def signup(request):
    if request.user.is_authenticated:
        return redirect(settings.LOGIN_REDIRECT_URL)
    if not signups_open():
        return render(request, "registration/signup_closed.html", status=403)
    form = SignupForm(request.POST or None)
    if request.method == "POST" and form.is_valid():
        user = create_account(form)
        if not user.is_active:
            return redirect("pending")
        login(request, user, backend="django.contrib.auth.backends.ModelBackend")
        return redirect(settings.LOGIN_REDIRECT_URL)
    return render(request, "registration/signup.html", {"form": form})


def pending(request):
    return render(request, "registration/pending.html", {"message": PENDING_MESSAGE})
