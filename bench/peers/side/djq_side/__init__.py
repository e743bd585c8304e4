"""Django-Q2 peer: a Django project; Redis or ORM broker from the bench environment."""
