"""The statistics of results as plain numbers (campaigns/statistics.py's Sample and
Comparison), for the results of A/B tests and of email campaigns."""

from rest_framework import serializers


class SampleSerializer(serializers.Serializer):
    visitors = serializers.IntegerField()
    conversions = serializers.IntegerField()
    conversion_rate = serializers.FloatField(allow_null=True)
    revenue_per_visitor = serializers.FloatField(allow_null=True)


class ComparisonSerializer(serializers.Serializer):
    """A test against its control (or the mailed against the holdout): the difference with its
    confidence interval, and relative to the control's value as the lift (null when that is 0)."""

    difference = serializers.FloatField()
    low = serializers.FloatField()
    high = serializers.FloatField()
    p_value = serializers.FloatField()
    lift = serializers.FloatField(allow_null=True)
    lift_low = serializers.FloatField(allow_null=True)
    lift_high = serializers.FloatField(allow_null=True)
    is_significant = serializers.BooleanField()
