"""The replay library ``warmserve local`` and ``warmserve simulate`` share: arrivals, forecasts, figures."""
