from django.urls import path

from orders import views

urlpatterns = [
    path("", views.product_list, name="product-list"),
    path("checkout/", views.checkout, name="checkout"),
    path("checkout/start/", views.checkout_start_view, name="checkout-start"),
    path("orders/<uuid:order_id>/", views.order_detail, name="order-detail"),
    path("orders/<uuid:order_id>/status.json", views.order_status, name="order-status"),
]
