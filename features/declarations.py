"""Every feature, declared once: name, entity, window, type and meaning.

The declarations order the columns of every feature frame (offline training set, online candidates) and
generate ``docs/features.md`` (``python -m features.docs``; a test fails when the doc is stale). A
feature's value for a decision at time ``as_of`` uses only events strictly before ``as_of``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from nbm.lifecycle import LIFECYCLE_STAGES

Entity = Literal["user", "message", "user×channel", "user×topic", "user×tag", "user×message", "user×hour", "time"]
Kind = Literal["float", "category"]


@dataclass(frozen=True)
class Feature:
    """One feature of a (user, message, channel, send time) candidate."""

    name: str
    entity: Entity
    window: str
    kind: Kind
    description: str


def _f(name: str, entity: Entity, window: str, description: str, kind: Kind = "float") -> Feature:
    return Feature(name, entity, window, kind, description)


_RFM = [
    _f(f"user_{what}_{days}d", "user", f"{days} days", f"{label} in the {days} days before the decision")
    for what, label in (("visits", "Visits"), ("converts", "Conversions"), ("revenue", "Revenue of conversions"))
    for days in (7, 30, 90)
]

FEATURES: tuple[Feature, ...] = (
    *_RFM,
    _f("user_days_since_signup", "user", "all history", "Days from signup to the decision (missing if unknown)."),
    _f("user_days_since_visit", "user", "all history", "Days since the last visit, click or conversion (activity)."),
    _f("user_days_since_open", "user", "all history", "Days since the last open on any channel."),
    _f("user_days_since_click", "user", "all history", "Days since the last click."),
    _f("user_days_since_convert", "user", "all history", "Days since the last conversion."),
    _f("user_lifecycle_stage", "user", "all history",
       "new (within `lifecycle.new_days` of signup), active, at_risk or dormant (days since the last visit, click "
       "or conversion against `lifecycle.at_risk_after_days` and `dormant_after_days`; nbm.lifecycle).", "category"),
    _f("user_activity_state", "user", "30 days",
       "power / core / casual / low: visits in 30 days against `activity.ideal_visits_per_week`.", "category"),
    _f("user_engagement_explicit", "user", "profile",
       "Half profile completeness (share of attribute columns filled), half consent breadth (consented / configured channels)."),
    _f("user_engagement_implicit", "user", "30 days",
       "1 − exp(−(visits + opens + 2·clicks + 5·conversions) / 10) over 30 days."),
    _f("user_engagement_score", "user", "30 days", "0.3 · explicit + 0.7 · implicit engagement, in [0, 1]."),
    _f("user_unsubscribed_channels", "user", "all history", "Channels the user unsubscribed from or bounced on."),
    _f("user_consented_channels", "user", "profile", "Channels in the user's consent, less unsubscribed ones."),
    _f("uc_sends_30d", "user×channel", "30 days", "Messages sent to the user on the candidate's channel."),
    _f("uc_opens_30d", "user×channel", "30 days", "Opens by the user on the channel."),
    _f("uc_clicks_30d", "user×channel", "30 days", "Clicks by the user on the channel."),
    _f("uc_open_rate", "user×channel", "90 days",
       "Opens / sends on the channel, smoothed toward the open rate of the channel in the user's segment "
       "(`features.segment_by`; without segments, the channel's population rate), with the `user_channel_opens` "
       "strength (see Smoothing)."),
    _f("uc_click_rate", "user×channel", "90 days",
       "Clicks / sends on the channel, smoothed the same way (`user_channel_clicks`)."),
    _f("uc_hours_since_contact", "user×channel", "all history", "Hours since the last send on the channel."),
    _f("uc_contacts_24h", "user×channel", "24 hours", "Sends on the channel in the last 24 hours (fatigue)."),
    _f("uc_contacts_7d", "user×channel", "7 days", "Sends on the channel in the last 7 days (fatigue)."),
    _f("user_contacts_7d", "user", "7 days", "Sends on any channel in the last 7 days (fatigue)."),
    _f("ut_click_affinity", "user×topic", "90 days",
       "Clicks / sends on the message's topic, smoothed toward the click rate of the topic in the user's segment "
       "(without segments, the topic's population rate), with the `user_topic_clicks` strength."),
    _f("ut_open_affinity", "user×topic", "90 days",
       "Opens / sends on the message's topic, smoothed likewise (`user_topic_opens`)."),
    _f("ut_click_lift", "user×topic", "90 days",
       "Clicks / sends on the message's topic, smoothed toward the user's own click rate over every topic (itself "
       "smoothed toward the population's), divided by that own rate: above 1 where the person prefers the topic "
       "(`user_topic_clicks` strength)."),
    _f("ut_open_lift", "user×topic", "90 days",
       "Opens / sends on the message's topic against the user's own open rate, the same way (`user_topic_opens`)."),
    _f("ug_click_affinity", "user×tag", "90 days",
       "Mean over the message's tags of clicks / sends on that tag, smoothed toward the tag's population rate "
       "(`user_tag_clicks`)."),
    _f("uh_open_rate", "user×hour", "90 days",
       "Opens / sends at the candidate's local hour of day, smoothed toward the user's own open rate "
       "(`user_hour_opens`; the own rate toward the overall one, `user_opens`)."),
    _f("uh_open_rate_near", "user×hour", "90 days",
       "Opens / sends at the hours around the candidate's local hour (± 2 h, Gaussian weights of width 1.5 h), "
       "smoothed toward the user's own open rate."),
    _f("uh_visit_share", "user×hour", "90 days",
       "Share of the user's visits at the candidate's local hour, smoothed toward 1/24 (`user_hour_visits`)."),
    _f("uh_visit_share_near", "user×hour", "90 days",
       "Share of the user's visits at the hours around the candidate's local hour (± 2 h, Gaussian weights of "
       "width 1.5 h, per hour), smoothed toward 1/24."),
    _f("uh_hours_from_visit_peak", "user×hour", "90 days",
       "Hours (0–12, on the 24-hour clock) between the candidate's local hour and the hour the user visits around "
       "(the circular mean of the local hours of their visits); missing without visits; 6 (every hour as near) when "
       "they spread evenly round the clock (no peak)."),
    _f("user_visit_hour_concentration", "user", "90 days",
       "How concentrated the user's visits are around that hour: the length of the mean of their visits' hours as "
       "vectors on the 24-hour clock, 0 (spread evenly) to 1 (always the same hour); missing without visits."),
    _f("uw_visit_share", "user×hour", "90 days",
       "Share of the user's visits on the candidate's local weekday, smoothed toward 1/7 (`user_weekday_visits`)."),
    _f("message_age_days", "message", "catalog", "Days since the message's start_at (missing when it has none)."),
    _f("message_open_rate", "message", "all history",
       "Population opens / sends of the message, smoothed toward its topic's rate, itself smoothed toward the overall "
       "rate (`message_opens`; a new message is judged by its topic)."),
    _f("message_click_rate", "message", "all history",
       "Population clicks / sends of the message, smoothed likewise (`message_clicks`)."),
    _f("message_convert_rate", "message", "all history",
       "Population conversions / sends of the message, smoothed likewise (`message_converts`)."),
    _f("message_sends", "message", "all history", "Sends of the message to anybody (cold start: 0)."),
    _f("message_value", "message", "catalog", "Business value of a conversion from the message."),
    _f("message_topic", "message", "catalog", "The message's topic.", "category"),
    _f("channel", "message", "candidate", "The candidate's channel.", "category"),
    _f("um_received", "user×message", "all history", "Times the user received this message."),
    _f("um_days_since_received", "user×message", "all history", "Days since the user last received it."),
    _f("um_engaged", "user×message", "all history", "1 when the user opened or clicked this message before."),
    _f("time_local_hour", "time", "candidate", "Hour of day of the send time in the user's time zone."),
    _f("time_local_weekday", "time", "candidate", "Weekday (0 = Monday) of the send time in the user's time zone."),
    _f("time_hours_until_send", "time", "candidate", "Hours from the decision to the send time."),
    _f("time_hours_since_contact", "time", "all history", "Hours since the last send on any channel."),
)

FEATURE_NAMES: tuple[str, ...] = tuple(f.name for f in FEATURES)
CATEGORICAL: tuple[str, ...] = tuple(f.name for f in FEATURES if f.kind == "category")
LIFECYCLE_CODES = LIFECYCLE_STAGES
ACTIVITY_CODES = ("power", "core", "casual", "low")


def feature(name: str) -> Feature:
    for f in FEATURES:
        if f.name == name:
            return f
    raise KeyError(f"no feature `{name}`")
