from django.urls import path

from orders import views

urlpatterns = [
    path("", views.product_list, name="product-list"),
    path("products/<slug:sku>/", views.product_detail, name="product-detail"),
    path("cart/", views.cart, name="cart"),
    path("cart/add/", views.cart_add_view, name="cart-add"),
    path("cart/update/", views.cart_update, name="cart-update"),
    path("cart/remove/", views.cart_remove_view, name="cart-remove"),
    path("checkout/", views.checkout, name="checkout"),
    path("checkout/start/", views.checkout_start_view, name="checkout-start"),
    path("orders/<uuid:order_id>/", views.order_detail, name="order-detail"),
    path("orders/<uuid:order_id>/status.json", views.order_status, name="order-status"),
    path("orders/<uuid:order_id>/pay/", views.order_pay_again_view, name="order-pay-again"),
]
