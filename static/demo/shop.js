/* The demo shop's own cart (localStorage) and its calls to the coremetrics tag. */
(function () {
  "use strict";
  function cart() { try { return JSON.parse(localStorage.getItem("demo-cart") || "[]"); } catch (e) { return []; } }
  function save(items) { localStorage.setItem("demo-cart", JSON.stringify(items)); }
  function total(items) { return items.reduce(function (sum, item) { return sum + Number(item.price); }, 0); }
  document.getElementById("cart-count").textContent = cart().length;

  var product = document.querySelector(".product-page");
  var add = document.getElementById("add-to-cart");
  if (product && add) {
    add.addEventListener("click", function () {
      var item = { id: product.dataset.productId, name: product.dataset.name, price: product.dataset.price };
      save(cart().concat([item]));
      cm("track", "cart_add", { product_id: item.id, value: Number(item.price) });
      location.href = "/demo/shop/cart/";
    });
  }

  var list = document.getElementById("cart-items");
  if (list) {
    var draw = function () {
      var items = cart();
      while (list.firstChild) list.removeChild(list.firstChild);
      items.forEach(function (item, index) {
        var li = document.createElement("li");
        li.className = "product";
        li.textContent = item.name + " — $" + item.price + " ";
        var remove = document.createElement("button");
        remove.type = "button";
        remove.textContent = "Remove";
        remove.addEventListener("click", function () {
          var rest = cart();
          rest.splice(index, 1);
          save(rest);
          cm("track", "cart_remove", { product_id: item.id, value: Number(item.price) });
          draw();
        });
        li.appendChild(remove);
        list.appendChild(li);
      });
      document.getElementById("cart-total").textContent = total(items).toFixed(2);
      document.getElementById("cart-count").textContent = items.length;
      document.getElementById("buy").disabled = !items.length;
    };
    draw();
    document.getElementById("buy").addEventListener("click", function () {
      var items = cart();
      var orderId = "ORD-" + Date.now().toString(36).toUpperCase();
      cm("track", "purchase", {
        order_id: orderId, value: Number(total(items).toFixed(2)), currency: "USD",
        email: document.getElementById("email").value, items: items
      });
      save([]);
      sessionStorage.setItem("demo-order", orderId);
      location.href = "/demo/shop/thanks/";
    });
  }

  var order = document.getElementById("order-id");
  if (order) order.textContent = sessionStorage.getItem("demo-order") || "";
})();
