"""A demo client's web shop that embeds the tag, for `make run` and the browser tests.

It stands for a client's own site: it knows nothing of coremetrics but the snippet.
"""

from django.conf import settings
from django.http import Http404
from django.shortcuts import get_object_or_404, render
from django.urls import path

from coremetrics.models import Client
from delivery.tag import tag_snippet

DEMO_CLIENT_SLUG = "golf-shop"

PRODUCTS = [
    {"id": "driver-x1", "name": "X1 Carbon Driver", "price": "349.00", "category": "clubs"},
    {"id": "iron-set", "name": "Forged Iron Set (5-PW)", "price": "899.00", "category": "clubs"},
    {"id": "putter-b", "name": "Blade Putter", "price": "159.00", "category": "clubs"},
    {"id": "balls-12", "name": "Tour Balls, 12 pack", "price": "49.99", "category": "balls"},
    {"id": "glove-l", "name": "Cabretta Leather Glove", "price": "24.50", "category": "gear"},
    {"id": "bag-stand", "name": "Lightweight Stand Bag", "price": "229.00", "category": "gear"},
]
PRODUCTS_BY_ID = {product["id"]: product for product in PRODUCTS}


def _context(request, **extra):
    client = get_object_or_404(Client, slug=DEMO_CLIENT_SLUG)
    base = settings.PUBLIC_BASE_URL or request.build_absolute_uri("/")
    return {"snippet": tag_snippet(base_url=base, public_key=client.public_key), **extra}


def home(request):
    return render(request, "demo_shop/home.html", _context(request, products=PRODUCTS))


def product(request, product_id):
    item = PRODUCTS_BY_ID.get(product_id)
    if item is None:
        raise Http404("no such product")
    return render(request, "demo_shop/product.html", _context(request, product=item))


def cart(request):
    return render(request, "demo_shop/cart.html", _context(request, products=PRODUCTS))


def thanks(request):
    return render(request, "demo_shop/thanks.html", _context(request))


urlpatterns = [
    path("shop/", home, name="demo-home"),
    path("shop/product/<slug:product_id>/", product, name="demo-product"),
    path("shop/cart/", cart, name="demo-cart"),
    path("shop/thanks/", thanks, name="demo-thanks"),
]
