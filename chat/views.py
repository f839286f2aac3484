"""The chat pages. Every view that takes an id looks it up among the user's own
conversations, so another user's id is simply a 404."""

from asgiref.sync import sync_to_async
from django.contrib.auth.decorators import login_required
from django.core.exceptions import PermissionDenied
from django.db.models import Q
from django.http import Http404, HttpResponse, JsonResponse
from django.shortcuts import get_object_or_404, redirect, render
from django.urls import reverse
from django.utils.text import slugify
from django.views.decorators.http import require_GET, require_POST
from django_htmx.http import HttpResponseClientRedirect

from chat import branches, export, settings_form, thread, turns
from chat.live import jobs
from chat.models import Conversation, Message, Preference
from providers.models import Model

SIDEBAR_PAGE = 50
MAX_SEARCH_CHARS = 200


def _owned(request, conversation_id) -> Conversation:
    return get_object_or_404(Conversation, pk=conversation_id, owner=request.user)


def _models_for(user):
    return (
        Model.objects.available_to(user)
        .select_related("provider")
        .order_by("provider__name", "display_name")
    )


def _sidebar(user, query: str = "", cursor: str = "") -> dict:
    """Pinned first, then newest; keyset-paged so 10,000 conversations stay fast."""
    conversations = Conversation.objects.filter(owner=user).only("id", "title", "pinned", "updated")
    if query:
        conversations = conversations.filter(
            Q(title__icontains=query) | Q(messages__content__icontains=query)
        ).distinct()
    pinned = list(conversations.filter(pinned=True).order_by("-updated")) if not cursor else []
    rest = conversations.filter(pinned=False).order_by("-updated", "-id")
    if cursor:
        try:
            updated, pk = cursor.split("|", 1)
            rest = rest.filter(Q(updated__lt=updated) | Q(updated=updated, id__lt=pk))
        except (ValueError, TypeError):
            rest = rest.none()
    page = list(rest[: SIDEBAR_PAGE + 1])
    more = page[SIDEBAR_PAGE] if len(page) > SIDEBAR_PAGE else None
    page = page[:SIDEBAR_PAGE]
    next_cursor = f"{page[-1].updated.isoformat()}|{page[-1].pk}" if more else ""
    return {"pinned": pinned, "conversations": page, "next_cursor": next_cursor, "query": query}


def _page_context(request, conversation=None) -> dict:
    preference = Preference.objects.filter(user=request.user).first()
    models = list(_models_for(request.user))
    chosen = conversation.model_id if conversation and conversation.model_id else None
    gone = chosen is not None and not any(m.pk == chosen for m in models)
    chosen = chosen or getattr(preference, "last_model_id", None)
    return {
        "sidebar": _sidebar(request.user),
        "models": models,
        "chosen_model_id": chosen if any(m.pk == chosen for m in models) else None,
        "conversation": conversation,
        # Never switch a conversation to another model behind the person's back.
        "model_gone": (
            f"This conversation's model, {conversation.model.display_name}, is no longer "
            "available to you. Pick another one to go on."
        )
        if gone
        else "",
    }


@login_required
@require_GET
def home(request):
    return render(request, "chat/page.html", _page_context(request))


@login_required
@require_POST
async def new_chat(request):
    user = await request.auser()
    try:
        conversation, _, plan = await sync_to_async(turns.start_conversation)(
            user, request.POST.get("content", ""), request.POST.get("model")
        )
    except turns.Refused as refusal:
        context = await sync_to_async(_page_context)(request)
        context["error"] = str(refusal)
        context["draft"] = request.POST.get("content", "")
        return await sync_to_async(render)(request, "chat/page.html", context, status=400)
    jobs.start(plan)
    return redirect("conversation", conversation_id=conversation.pk)


@login_required
@require_GET
def conversation(request, conversation_id):
    """The branch the conversation shows (chat.thread): its last messages, and a loader."""
    conversation = _owned(request, conversation_id)
    shown = thread.window(conversation)
    context = _page_context(request, conversation)
    context.update(
        messages=shown.messages,
        earlier_before=shown.earlier_before,
        settings_form=settings_form.for_conversation(conversation),
    )
    return render(request, "chat/page.html", context)


@login_required
@require_GET
def earlier_messages(request, conversation_id):
    conversation = _owned(request, conversation_id)
    try:
        before = int(request.GET.get("before", ""))
    except ValueError:
        raise Http404 from None
    shown = thread.earlier(conversation, before)
    context = {
        "messages": shown.messages,
        "conversation": conversation,
        "earlier_before": shown.earlier_before,
    }
    return render(request, "chat/_earlier.html", context)


@login_required
@require_POST
def fork(request, conversation_id, message_id):
    """Branch into a new conversation: the path from the root down to this message."""
    try:
        copy = branches.fork(request.user, conversation_id, message_id)
    except Conversation.DoesNotExist:
        raise Http404 from None
    except turns.Refused as refusal:
        return HttpResponse(str(refusal), status=409)
    return HttpResponseClientRedirect(reverse("conversation", args=[copy.pk]))


@login_required
@require_GET
def sidebar(request):
    query = request.GET.get("q", "").strip()[:MAX_SEARCH_CHARS]
    context = {"sidebar": _sidebar(request.user, query, request.GET.get("cursor", ""))}
    template = "chat/_sidebar_page.html" if request.GET.get("cursor") else "chat/_sidebar_list.html"
    return render(request, template, context)


@login_required
@require_POST
def rename(request, conversation_id):
    conversation = _owned(request, conversation_id)
    title = " ".join(request.POST.get("title", "").split())[:200]
    if title:
        conversation.title = title
        conversation.save(update_fields=["title"])
    return render(
        request, "chat/_sidebar_item.html", {"item": conversation, "current": conversation}
    )


@login_required
@require_POST
def pin(request, conversation_id):
    conversation = _owned(request, conversation_id)
    conversation.pinned = not conversation.pinned
    conversation.save(update_fields=["pinned"])
    return render(request, "chat/_sidebar_list.html", {"sidebar": _sidebar(request.user)})


@login_required
@require_POST
def delete(request, conversation_id):
    conversation = _owned(request, conversation_id)
    if conversation.messages.filter(status=Message.Status.STREAMING).exists():
        return HttpResponse("Stop the reply that is being written first.", status=409)
    conversation.delete()
    if str(conversation_id) in (request.htmx.current_url or ""):
        return HttpResponseClientRedirect(reverse("home"))  # the page showed it: go home
    return HttpResponse("")


@login_required
@require_POST
def choose_model(request, conversation_id):
    conversation = _owned(request, conversation_id)
    model = _models_for(request.user).filter(pk=request.POST.get("model") or 0).first()
    if model is None:
        raise PermissionDenied("That model is not available to you.")
    conversation.model = model
    conversation.save(update_fields=["model"])
    Preference.objects.update_or_create(user=request.user, defaults={"last_model": model})
    form = settings_form.for_conversation(conversation)
    return render(
        request, "chat/_settings.html", {"conversation": conversation, "settings_form": form}
    )


@login_required
@require_POST
def update_settings(request, conversation_id):
    conversation = _owned(request, conversation_id)
    form = settings_form.for_conversation(conversation, request.POST)
    saved = form.is_valid()
    if saved:
        form.apply(conversation)
    context = {"conversation": conversation, "settings_form": form, "saved": saved}
    return render(request, "chat/_settings.html", context, status=200 if saved else 400)


@login_required
@require_GET
def export_conversation(request, conversation_id, fmt):
    conversation = _owned(request, conversation_id)
    if fmt not in ("md", "json"):
        raise Http404("Export as .md or .json")
    name = slugify(conversation.title)[:60] or "conversation"
    if fmt == "json":
        response = JsonResponse(export.as_json(conversation), json_dumps_params={"indent": 2})
    else:
        response = HttpResponse(export.as_markdown(conversation), content_type="text/markdown")
    response["Content-Disposition"] = f'attachment; filename="{name}.{fmt}"'
    return response


@login_required
@require_POST
def import_conversation(request):
    try:
        data = export.read_upload(request.FILES.get("file"))
        conversation = export.import_json(request.user, data)
    except export.BadImport as bad:
        context = _page_context(request)
        context["error"] = str(bad)
        return render(request, "chat/page.html", context, status=400)
    return redirect("conversation", conversation_id=conversation.pk)
